"""Answers for two-skill prompts, composed from the single adapters' own skills.

No data set has a French translation of a UCI review with its sentiment, or a French TL;DR of a SciTLDR
abstract. So, as LoRA-Flow does for its combined tasks, an answer is composed from gold halves and the
shipped ``translate_fr`` adapter's French. One fixed format per kind, which the scorer in
:mod:`dlp.metrics` reads:

- review: the gold label, then the review's French on the next line (``negative\nLa soupe ...``);
- French TL;DR: the gold TL;DR in French (one line: both skills at the same tokens);
- reading: the gold SQuAD span, then the answer as a French sentence (``Denver\nLa réponse est Denver.``).

Where a kind allows it, the short half comes first, in the words its own adapter writes. Measured on
held-out reviews by handing the answer from one adapter to the other at the first line break:
sentiment then translate_fr gets both halves on 0.95 of items, translate_fr then sentiment 0.15 (after
its French, the sentiment adapter stops). So the learned fusions are taught the order in which the two
adapters can take turns. Built from training items for training and from held-out items for the
scorer's references; each French half is cached per sentence under the cache folder (derived data
stays out of the repo), so more items reuse the ones already translated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .composite import EVAL_KINDS, KINDS, two_skill_prompts

TRANSLATE_PROMPT = "Translate to French: {x}"


@dataclass(frozen=True)
class CompositeExample:
    kind: str
    prompt: str
    response: str  # the composed answer in the kind's fixed format
    ref: dict = field(default_factory=dict)  # the source item's reference, plus "french" (the composed half)


def english_to_translate(kind: str, ref: dict) -> str:
    """The English half that ``translate_fr`` turns into French for one item."""
    if kind == "translate_fr+sentiment":
        return ref["text"]
    if kind == "summarize+translate_fr":
        return ref["references"][0]
    if kind == "reading_qa+translate_fr":
        return f"The answer is {ref['answers'][0].rstrip('.')}."
    raise KeyError(f"no composed answer for kind '{kind}'")


def french_half(kind: str, french: str, ref: dict) -> str:
    """The translator's output cleaned into the French half of ``kind``'s answer."""
    french = french.strip().split("\n")[0].strip()
    if kind == "reading_qa+translate_fr":  # the 135M translator garbles "The answer is" ("Le dernier est ...")
        head, sep, rest = french.partition(" est ")
        rest = rest.strip() if sep and len(head.split()) <= 4 else ref["answers"][0]
        return f"La réponse est {rest.rstrip('.')}."
    return french


def compose(kind: str, french: str, ref: dict, sep: str = "\n") -> str:
    """The whole answer in ``kind``'s fixed format (see the module's docstring); ``sep`` between the halves."""
    french = french_half(kind, french, ref)
    if kind == "translate_fr+sentiment":
        return f"{ref['label']}{sep}{french}"
    if kind == "reading_qa+translate_fr":
        return f"{ref['answers'][0].rstrip('.')}{sep}{french}"
    return french


def separator(prompt: str, split: str) -> str:
    """Training answers break between their halves with one line break or, for half of them, a blank line.

    The model often writes a blank line there. A gate taught only "label\n" then French meets
    "label\n\n" in its own answers, a state it never saw, and lets the first adapter go on:
    "positive\n\npositive\n\npositive" was the token gate's commonest failure on held-out reviews."""
    from .tasks import _bucket

    return "\n\n" if split == "train" and _bucket("sep:" + prompt) < 50 else "\n"


def _items(kind: str, split: str, n: int, seed: int):
    items = two_skill_prompts(kind, split, limit=n, seed=seed)
    return [type(i)(i.kind, i.prompt, i.mixture, {**i.ref, "text": i.ref["x"]}) for i in items]


def _translations(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    return {r["en"]: r["fr"] for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r}


def translate_missing(engine, english: list[str], known: dict[str, str], batch: int = 16,
                      progress: bool = True, desc: str = "translate") -> dict[str, str]:
    """French for each English sentence not in ``known``, by the engine's ``translate_fr``, shortest first."""
    from tqdm.auto import tqdm

    from .engine import Column
    from .generation import GenerationOptions

    todo = sorted({e for e in english if e not in known}, key=len)
    new: dict[str, str] = {}
    for s in tqdm(range(0, len(todo), batch), desc=desc, disable=not progress or not todo, mininterval=5):
        chunk = todo[s : s + batch]
        cols = [Column("translate", "translate_fr", {"translate_fr": 1.0})] * len(chunk)
        last, cap = None, min(160, 24 + max(len(e) for e in chunk) // 2)  # ~2 chars a token, French longer
        for last in engine.stream([TRANSLATE_PROMPT.format(x=e) for e in chunk], cols,
                                  GenerationOptions(max_new_tokens=cap), every=10_000):
            pass
        new.update(zip(chunk, last.state.texts))
    return new


def build(engine, kind: str, split: str, n: int, seed: int = 0, cache: Path | None = None,
          batch: int = 16, progress: bool = True) -> list[CompositeExample]:
    """``n`` composite examples of ``kind``; the French halves come from the engine's ``translate_fr``."""
    items = _items(kind, split, n, seed)
    weights = Path(engine.adapters["translate_fr"].folder) / "adapter_model.safetensors"
    stamp = hashlib.sha1(weights.read_bytes()).hexdigest()[:10] if weights.is_file() else "none"
    path = Path(cache) / f"translations.{stamp}.jsonl" if cache else None  # keyed by the translator's weights
    known = _translations(path)
    english = [english_to_translate(kind, i.ref) for i in items]
    new = translate_missing(engine, english, known, batch, progress, desc=f"compose {kind}")
    if path is not None and new:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"en": e, "fr": f}, ensure_ascii=False) + "\n" for e, f in new.items())
    known.update(new)
    return [CompositeExample(kind, i.prompt, compose(kind, known[e], i.ref, separator(i.prompt, split)),
                             {**i.ref, "french": french_half(kind, known[e], i.ref)})
            for i, e in zip(items, english)]


def build_all(engine, split: str, n: int, cache: Path | None, kinds=EVAL_KINDS) -> list[CompositeExample]:
    return [e for kind in kinds if all(a in engine.names for a in KINDS[kind][0])
            for e in build(engine, kind, split, n, cache=cache)]
