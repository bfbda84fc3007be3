"""Two-skill prompts: one request that needs two adapters at once (the case fusion exists for).

Built from two tasks' items joined by several natural phrasings. The router learns them with soft
targets (0.5 / 0.5); ``python -m dlp eval`` scores three kinds on both skills, on held-out items.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .tasks import _LOADERS, _bucket


@dataclass(frozen=True)
class TwoSkill:
    kind: str  # "code+math", ...
    prompt: str
    mixture: dict[str, float]  # the router's soft target
    ref: dict = field(default_factory=dict)  # what the scorer needs


# kind -> (the two adapters, the task whose items fill {x}, phrasings)
KINDS: dict[str, tuple[tuple[str, str], str, list[str]]] = {
    "code+math": (("code", "math"), "math", [
        "Write a Python function that takes no arguments and returns the answer to this word problem. {x}",
        "Solve this with a Python function (no arguments) that returns the final number: {x}",
        "{x} Write a Python function with no parameters that computes and returns the answer.",
        "Can you write Python code for this math problem? The function should take no arguments and return the answer. {x}",
        "Write a program in Python to work out the answer: {x}",
        "Code a Python solution to this word problem: {x}",
    ]),
    "translate_fr+sentiment": (("translate_fr", "sentiment"), "sentiment", [
        "Translate this review into French and tell me if it is positive or negative: {x}",
        "Is this review positive or negative? Then translate it to French. \"{x}\"",
        "{x}\nTranslate that into French and give its sentiment.",
        "French translation and sentiment (positive or negative), please: {x}",
        "Say whether this comment is positive or negative, and write it in French: {x}",
        "Review: {x}\nGive the sentiment, then the French translation.",
        "Translate to French, then tell me whether the customer is happy: {x}",
        "Put this comment into French and classify it as positive or negative.\n{x}",
        "{x}\nIn French please, and is it a good or a bad review?",
        "Can you translate this review to French and label its sentiment? {x}",
    ]),
    "science_qa+translate_fr": (("science_qa", "translate_fr"), "science_qa", [
        "Answer this science question in French.\n{x}",
        "Pick the right option and explain your answer in French.\n{x}",
        "Please answer in French:\n{x}",
        "{x}\nGive the correct letter, then explain it in French.",
        "Science quiz, answer in French please.\n{x}",
    ]),
    # Router-only kinds: more pairs, so the router learns "two skills" and not three fixed recipes.
    "math+translate_fr": (("math", "translate_fr"), "math", [
        "Solve this problem and give your answer in French: {x}",
        "{x} Explain the solution in French.",
        "Answer in French, please: {x}",
    ]),
    "summarize+translate_fr": (("summarize", "translate_fr"), "summarize", [
        "Summarize this abstract in one sentence, in French:\n{x}",
        "Give me a French TL;DR of this paper abstract.\n{x}",
        "{x}\n\nSum up the paper above in one French sentence.",
        "Write a one-sentence summary of this abstract in French.\n{x}",
        "TL;DR in French, please:\n{x}",
        "Résume en une phrase, en français, cet abstract :\n{x}",
        "{x}\n\nWhat is this paper about? Answer in one sentence, in French.",
    ]),
    "summarize+sentiment": (("summarize", "sentiment"), "sentiment", [
        "Summarize this review in one sentence and say whether it is positive or negative: {x}",
        "Give me a one-line summary of this comment and its sentiment: {x}",
        "TL;DR and sentiment of this customer review: {x}",
    ]),
    "reading_qa+translate_fr": (("reading_qa", "translate_fr"), "reading_qa", [
        "Answer the question in French, using the passage.\n{x}",
        "{x}\nReply in French.",
        "Read the passage and answer the question in French.\n\n{x}",
        "{x}\nAnswer in French, with a short phrase from the text.",
        "Based on this text, answer in French:\n{x}",
        "Réponds en français.\n{x}",
    ]),
    "code+translate_fr": (("code", "translate_fr"), "code", [
        "{x} Explain the code in French.",
        "Write this Python function with comments in French: {x}",
    ]),
}
# Scored kinds: both of their adapters beat the base alone. The earlier code+math and science_qa+translate_fr
# paired adapters that do not (math, science_qa); their results stay in results.json as a footnote.
EVAL_KINDS = ("translate_fr+sentiment", "summarize+translate_fr", "reading_qa+translate_fr")
RETIRED_KINDS = ("code+math", "science_qa+translate_fr")


def two_skill_prompts(kind: str, split: str = "train", limit: int | None = None, seed: int = 0,
                      eval_phrasings: bool = False) -> list[TwoSkill]:
    """Two-skill prompts of one kind from one split's items. ``eval_phrasings`` keeps the phrasings the
    scorer can check (code+math: a function with no arguments)."""
    (a, b), source, phrasings = KINDS[kind]
    if eval_phrasings and kind == "code+math":
        phrasings = [p for p in phrasings if "no " in p]
    rows = _LOADERS[source](split)
    random.Random(f"{kind}:{split}:{seed}").shuffle(rows)
    out = []
    for x, y, ref in rows[:limit]:
        x = x.split(" It should pass this test:")[0]
        template = phrasings[(_bucket(f"{seed}:{x}") + seed) % len(phrasings)]
        out.append(TwoSkill(kind, template.format(x=x), {a: 0.5, b: 0.5}, {**ref, "target": y, "x": x}))
    return out
