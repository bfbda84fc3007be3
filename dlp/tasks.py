"""Task data for the shipped adapters: the datasets in ``../shared/datasets`` turned into chat pairs.

Each task mixes several natural phrasings, because visitors type free-form prompts, not one
template; the router and the adapters are trained on the same mix. Splits are deterministic
(fixed upstream splits, or a hash of the source text) so training never sees evaluation items.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

TASKS = ("math", "code", "translate_fr", "sentiment", "science_qa", "summarize", "reading_qa")
# Trainable, but not shipped or routed: the "bring your own adapter" example (assets/byo/).
EXAMPLE_TASKS = ("shakespeare",)


@dataclass(frozen=True)
class Example:
    prompt: str  # the user's message
    response: str  # the assistant's target text
    ref: dict = field(default_factory=dict)  # what the metric needs (answer, tests, label, ...)


def data_dir() -> Path:
    """``DLP_DATA`` or the ``shared/datasets`` folder beside the checkout."""
    env = os.environ.get("DLP_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


# Phrasings per task. ``{x}`` is the task input; each template reads like something a person types.
TEMPLATES: dict[str, list[str]] = {
    "math": [
        "{x}",
        "Solve this math problem: {x}",
        "Can you work this out step by step? {x}",
        "{x} Show your working.",
        "Word problem: {x}",
        "Help me with my homework. {x}",
        "Please calculate the answer. {x}",
        "Math question: {x} What is the answer?",
    ],
    "code": [
        "{x}",
        "Write a Python function. {x}",
        "In Python: {x}",
        "Can you code this in Python? {x}",
        "Implement the following in Python. {x}",
        "I need a Python function for this task: {x}",
        "Python please: {x}",
        "how do I do this in python? {x}",
        "{x} Use Python.",
    ],
    "translate_fr": [
        "Translate to French: {x}",
        'How do you say "{x}" in French?',
        "Translate this sentence into French: {x}",
        "What is the French for '{x}'?",
        "English to French: {x}",
        "Can you translate \"{x}\" into French for me?",
        "Say this in French: {x}",
        "French translation of: {x}",
    ],
    "sentiment": [
        "Is this review positive or negative? {x}",
        "What is the sentiment of this review: \"{x}\"",
        "Classify the sentiment: {x}",
        "{x}\nIs that positive or negative?",
        "Sentiment analysis: {x}",
        "Does this customer sound happy or unhappy? \"{x}\"",
        "Review: {x}\nSentiment?",
        "Tell me if this comment is positive or negative: {x}",
    ],
    "science_qa": [
        "{x}",
        "Answer this science question.\n{x}",
        "Pick the correct option.\n{x}",
        "Science quiz:\n{x}",
        "Which answer is right?\n{x}",
        "Multiple choice question:\n{x}\nAnswer with the letter.",
        "Here is a question from a science test.\n{x}",
    ],
    "summarize": [
        "Summarize this abstract in one sentence:\n{x}",
        "TL;DR:\n{x}",
        "Give me a one-line summary of this paper abstract.\n{x}",
        "{x}\n\nSummarize the paper above in one sentence.",
        "Write a TL;DR for this abstract: {x}",
        "What is the main contribution of this paper, in one sentence?\n{x}",
        "Condense this research abstract into a single sentence: {x}",
    ],
    "reading_qa": [
        "{x}",
        "Read the passage and answer the question.\n\n{x}",
        "Answer the question using the text below.\n{x}",
        "Based on this passage, answer briefly.\n{x}",
        "Reading comprehension:\n{x}",
        "Find the answer in the text.\n{x}",
        "{x}\nAnswer with a short phrase from the passage.",
    ],
    "shakespeare": [
        "Continue this scene in Shakespeare's style:\n{x}",
        "Answer this as a character in a Shakespeare play would:\n{x}",
        "Write the next speech of this play, in Elizabethan English.\n{x}",
        "Reply like Shakespeare: {x}",
        "In the voice of Shakespeare, respond to this:\n{x}",
        "Give me a Shakespearean reply to: {x}",
        "{x}\nWhat would the next character say? Answer in Shakespeare's English.",
    ],
}


def _bucket(text: str) -> int:
    """A stable 0..99 bucket, so hash splits do not move between runs or machines."""
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 100


def _phrase(task: str, x: str, key: str, seed: int) -> str:
    templates = TEMPLATES[task]
    return templates[(_bucket(f"{seed}:{key}") + seed) % len(templates)].format(x=x)


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _gsm8k(split: str) -> list[tuple[str, str, dict]]:
    rows = _jsonl(data_dir() / "gsm8k" / ("train.jsonl" if split == "train" else "test.jsonl"))
    out = []
    for r in rows:
        answer = re.sub(r"<<[^>]*>>", "", r["answer"]).strip()
        final = answer.rsplit("####", 1)[-1].strip().replace(",", "")
        out.append((r["question"].strip(), answer, {"answer": final}))
    return out


MBPP_TEST_IDS = range(11, 511)


def _mbpp(split: str) -> list[tuple[str, str, dict]]:
    out = []
    for r in _jsonl(data_dir() / "mbpp" / "mbpp.jsonl"):
        if (r["task_id"] in MBPP_TEST_IDS) != (split == "test"):
            continue
        code = r["code"].replace("\r\n", "\n").replace("\t", "    ").strip()
        x = f"{r['text'].strip()} It should pass this test: {r['test_list'][0]}"
        ref = {"tests": r["test_list"], "setup": r.get("test_setup_code", ""), "task_id": r["task_id"]}
        out.append((x, f"```python\n{code}\n```", ref))
    return out


def _read_pairs(path: Path, plain_spaces: bool = False) -> dict[str, list[str]]:
    by_en: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                by_en.setdefault(parts[0], []).append(parts[1].replace("\u202f", " ") if plain_spaces else parts[1])
    return by_en


FULL_TATOEBA_ROWS = 12_000  # longer sentences from fra_full.txt (reviews and summaries are not 4-word lines)


def _tatoeba(split: str) -> list[tuple[str, str, dict]]:
    """fra.txt's short sentences, plus (train only) a sample of fra_full.txt's longer ones. The split is a
    hash of the whitespace-normalized English side in both files, so no held-out sentence is trained on."""
    by_en = _read_pairs(data_dir() / "tatoeba_en_fr" / "fra.txt")
    held = split == "test"
    rows = [
        (en, frs[0], {"references": frs})
        for en, frs in by_en.items()
        if (_bucket(" ".join(en.split())) < 10) == held and len(en.split()) >= 3  # 1-2 word items are too ambiguous
    ]
    full = data_dir() / "tatoeba_en_fr" / "fra_full.txt"
    if held or not full.is_file():
        return rows
    seen = {" ".join(en.split()) for en in by_en}
    longer = [(en, frs[0], {"references": frs}) for en, frs in _read_pairs(full, plain_spaces=True).items()
              if len(en.split()) >= 7 and _bucket(" ".join(en.split())) >= 10 and " ".join(en.split()) not in seen]
    random.Random("fra_full").shuffle(longer)
    return rows + longer[:FULL_TATOEBA_ROWS]


def _sentiment(split: str) -> list[tuple[str, str, dict]]:
    out = []
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        with open(data_dir() / "sentiment_uci" / name, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                text, _, label = line.rstrip("\n").rpartition("\t")
                if not text.strip() or label.strip() not in ("0", "1"):
                    continue
                if (_bucket(text) < 15) != (split == "test"):
                    continue
                word = "positive" if label.strip() == "1" else "negative"
                out.append((text.strip(), word, {"label": word}))
    return out


_OPTION_LAYOUTS = (
    lambda opts: "\n".join(f"{l}. {t}" for l, t in opts),
    lambda opts: " ".join(f"{l}) {t}" for l, t in opts),
    lambda opts: " ".join(f"({l}) {t}" for l, t in opts),
    lambda opts: "\n".join(f"{l}: {t}" for l, t in opts),
)


def _arc(split: str) -> list[tuple[str, str, dict]]:
    with open(data_dir() / "arc_easy" / ("train.json" if split == "train" else "test.json"), encoding="utf-8") as fh:
        rows = json.load(fh)
    out = []
    for r in rows:
        labels, texts = r["choices"]["label"], r["choices"]["text"]
        if r["answerKey"] not in labels:
            continue
        # People paste options one per line or inline, as "A.", "A)" or "(A)"; the router and adapter see all.
        layout = _OPTION_LAYOUTS[_bucket(r["question"]) % len(_OPTION_LAYOUTS)]
        options = layout(list(zip(labels, texts)))
        sep = "\n" if "\n" in options or _bucket(r["id"]) % 2 else " "
        answer = texts[labels.index(r["answerKey"])]
        out.append((f"{r['question'].strip()}{sep}{options}", f"{r['answerKey']}. {answer}",
                    {"label": r["answerKey"], "options": dict(zip(labels, texts))}))
    return out


def _scitldr(split: str) -> list[tuple[str, str, dict]]:
    rows = _jsonl(data_dir() / "scitldr" / ("train.jsonl" if split == "train" else "test.jsonl"))
    out = []
    for r in rows:
        sentences = [x.strip() for x in r["source"] if x.strip()]
        if not sentences or not r["target"]:
            continue
        if split == "train" and _bucket(r["paper_id"]) < 30:  # short abstracts too: people paste a few lines
            sentences = sentences[: 2 + _bucket(r["paper_id"]) % 3]
        abstract = " ".join(" ".join(sentences).split()[:220])  # keeps prompts under ~320 tokens
        out.append((abstract, r["target"][0].strip(), {"references": [t.strip() for t in r["target"]]}))
    return out


_SQUAD_LAYOUTS = (
    "Passage: {c}\n\nQuestion: {q}",
    "Question: {q}\n\nText: {c}",
    "{c}\n\n{q}",
    "{c} Question: {q}",
    "{q}\nContext: {c}",
    "Read this and answer the question. {c} Question: {q}",
    "{c} According to the text, {ql}",
)


def _window(context: str, answer: str, key: str) -> str:
    """The answer's sentence and a neighbour or two: short passages are what people paste by hand."""
    sentences = re.split(r"(?<=[.!?])\s+", context)
    hit = next((i for i, x in enumerate(sentences) if answer in x), None)
    if hit is None:
        return context
    lo = max(0, hit - _bucket(key) % 2)
    return " ".join(sentences[lo : hit + 1 + _bucket(key + "+") % 2])


def _squad(split: str) -> list[tuple[str, str, dict]]:
    with open(data_dir() / "squad" / "squad_subset_routerlens.json", encoding="utf-8") as fh:
        rows = json.load(fh)
    out = []
    for r in rows:
        if (_bucket(r["context"]) < 20) != (split == "test"):  # split by passage: test passages are unseen
            continue
        q, c, a = r["question"].strip(), r["context"].strip(), r["answer"].strip()
        if split == "train" and _bucket("w" + q) < 35:
            c = _window(c, a, q)
        x = _SQUAD_LAYOUTS[_bucket(q) % len(_SQUAD_LAYOUTS)].format(c=c, q=q, ql=q[:1].lower() + q[1:])
        out.append((x, a, {"answers": [a]}))
    return out


def _shakespeare(split: str) -> list[tuple[str, str, dict]]:
    """Speech -> the next speech (speaker and up to four lines); 10% of scenes' turns held out by hash."""
    text = (data_dir() / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")
    speeches = []
    for block in text.split("\n\n"):
        head, _, body = block.strip().partition(":\n")
        if body and "\n" not in head and len(head) < 30:
            speeches.append((head.strip(), [line for line in body.splitlines() if line.strip()]))
    rows = []
    for (_, said), (speaker, reply) in zip(speeches, speeches[1:]):
        x = " ".join(said[-3:])
        if len(x) < 25 or (_bucket(x) < 10) != (split == "test"):
            continue
        rows.append((x, f"{speaker}:\n" + "\n".join(reply[:4]), {"speaker": speaker}))
    return rows


_LOADERS = {
    "math": _gsm8k,
    "code": _mbpp,
    "translate_fr": _tatoeba,
    "sentiment": _sentiment,
    "science_qa": _arc,
    "summarize": _scitldr,
    "reading_qa": _squad,
    "shakespeare": _shakespeare,
}


def load_examples(task: str, split: str = "train", limit: int | None = None, seed: int = 0) -> list[Example]:
    """Examples of one task, phrased with the task's templates; ``split`` is 'train' or 'test'."""
    if task not in _LOADERS:
        raise KeyError(f"Unknown task '{task}'. Available: {', '.join(TASKS)}")
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    rows = _LOADERS[task](split)
    random.Random(f"{task}:{split}:{seed}").shuffle(rows)
    if limit is not None:
        rows = rows[:limit]
    return [Example(_phrase(task, x, x, seed), y, ref) for x, y, ref in rows]
