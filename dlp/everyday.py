"""Everyday prompts that no adapter fits: what the router must send to ``base`` (no adapter).

Greetings, chit-chat, general-knowledge questions, advice and creative requests, written as
phrasings x topics, plus the natural search questions of BoolQ (without their passages). Numbers,
French, code, reviews and abstracts are kept out: those belong to an adapter. Split by a hash of
the prompt, so the held-out check never sees a training prompt.
"""

from __future__ import annotations

import json
import random

from .manifest import RESERVED
from .tasks import _bucket, data_dir

BASE = RESERVED  # the reserved pseudo-adapter: a zero LoRA, i.e. the base model's own answer


GREETINGS = [
    "hi", "hello", "hey", "hey there!", "hello, how are you?", "good morning!", "good evening", "what's up?",
    "how's it going?", "nice to meet you", "thanks!", "thank you so much", "bye", "see you later", "who are you?",
    "what can you do?", "what is your name?", "are you a robot?", "can you help me?", "I'm bored", "I feel a bit sad today",
    "tell me something interesting", "how was your day?", "yo", "Hi there, can we chat?", "good night",
    "What do you like to do for fun?", "Do you have feelings?", "Can you be my friend?", "I just got a new puppy!",
    "I'm so tired today.", "What's the meaning of life?", "Say something nice.", "Cheer me up, please.",
]

TOPICS = [
    "dogs", "cats", "the ocean", "outer space", "autumn leaves", "coffee", "friendship", "robots", "pizza", "the moon",
    "a rainy day", "mountains", "winter", "a lonely dragon", "the city at night", "gardening", "football", "jazz",
    "a lighthouse", "birthdays", "time travel", "the forest", "trains", "summer holidays", "a lost key", "chocolate",
    "the first day of school", "elephants", "a haunted house", "sunflowers", "pirates", "the desert", "snow",
    "grandparents", "a busy airport", "bicycles", "owls", "a tiny village", "volcanoes", "dreams", "penguins",
]

CREATIVE = [
    "Tell me a joke about {t}.", "Write a short poem about {t}.", "Write a haiku about {t}.", "Tell me a story about {t}.",
    "Write a limerick about {t}.", "Can you write a song about {t}?", "Make up a bedtime story about {t}.",
    "Give me a fun fact about {t}.", "Write a funny tweet about {t}.", "Describe {t} in three words.",
    "Invent a superhero inspired by {t}.", "Write the opening line of a novel about {t}.", "Tell me a riddle about {t}.",
    "What would a world without {t} be like?", "write me something cheerful about {t}",
]

ADVICE = [
    "Recommend a good book about {t}.", "Suggest a movie about {t}.", "What are some tips for {a}?",
    "How do I get better at {a}?", "Any advice on {a}?", "What's the best way to start {a}?",
    "Give me ideas for {a}.", "Why do people enjoy {a}?", "Is {a} a good hobby?", "How can I make {a} more fun?",
]
ACTIVITIES = [
    "cooking", "running", "learning to draw", "public speaking", "making friends", "sleeping better", "saving money",
    "writing a diary", "learning the guitar", "planning a trip", "staying focused", "taking photos", "painting",
    "hiking", "baking bread", "meditation", "playing chess", "keeping a plant alive", "moving to a new city",
]

KNOWLEDGE = [
    "Why is the sky blue?", "Who painted the Mona Lisa?", "What is the capital of Australia?", "How do airplanes fly?",
    "What causes earthquakes?", "Who was Cleopatra?", "What is democracy?", "How does the internet work?",
    "Why do cats purr?", "What is the tallest mountain in the world?", "Who invented the telephone?",
    "What is the difference between weather and climate?", "Why do we dream?", "What language do people speak in Brazil?",
    "Tell me about the Roman Empire.", "Explain how vaccines work.", "What is a black hole?", "Who wrote Hamlet?",
    "What do bees do in winter?", "Why do leaves change colour in autumn?", "What is the Great Wall of China?",
    "How are rainbows formed?", "Who was the first person on the moon?", "What does a lawyer do?",
    "Explain {t} to a child.", "What is interesting about {t}?", "Tell me about {t}.", "What should I know about {t}?",
]


def _boolq_questions() -> list[str]:
    path = data_dir() / "boolq" / "validation.jsonl"
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)["subject"].strip()
            if q and not any(ch.isdigit() for ch in q):
                out.append(q[0].upper() + q[1:] + "?")
    return out


def everyday_prompts(split: str = "train", seed: int = 0) -> list[str]:
    """All everyday prompts of one split ('train' or 'test'), shuffled with ``seed``."""
    prompts = set(GREETINGS)
    for t in TOPICS:
        prompts.update(x.format(t=t) for x in CREATIVE)
        prompts.update(x.format(t=t) for x in KNOWLEDGE if "{t}" in x)
        prompts.update(x.format(t=t, a=ACTIVITIES[0]) for x in ADVICE if "{t}" in x)
    for a in ACTIVITIES:
        prompts.update(x.format(a=a) for x in ADVICE if "{a}" in x)
    prompts.update(x for x in KNOWLEDGE if "{t}" not in x)
    prompts.update(_boolq_questions())
    held = split == "test"
    rows = sorted(p for p in prompts if (_bucket("everyday:" + p) < 15) == held)
    random.Random(f"everyday:{split}:{seed}").shuffle(rows)
    return rows
