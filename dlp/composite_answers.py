"""Answers for two-skill prompts, composed from the single adapters' own skills.

No data set has a French translation of a UCI review with its sentiment, or a French TL;DR of a SciTLDR
abstract. So, as LoRA-Flow does for its combined tasks, an answer is composed from gold halves and the
shipped ``translate_fr`` adapter's French: the review's French then ``Sentiment: <gold label>``; the
gold TL;DR in French; the gold SQuAD answer as a French sentence. One fixed format per kind, which the
scorer in :mod:`dlp.metrics` reads. Built from training items for training and from held-out items for
the scorer's references; cached as JSONL under the cache folder (derived data stays out of the repo).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
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


def compose(kind: str, french: str, ref: dict) -> str:
    french = french.strip().split("\n")[0].strip()
    if kind == "translate_fr+sentiment":
        return f"{french}\nSentiment: {ref['label']}"
    if kind == "reading_qa+translate_fr":  # the 135M translator garbles "The answer is" ("Le dernier est ...")
        head, sep, rest = french.partition(" est ")
        rest = rest.strip() if sep and len(head.split()) <= 4 else ref["answers"][0]
        return f"La réponse est {rest.rstrip('.')}."
    return french


def _items(kind: str, split: str, n: int, seed: int):
    items = two_skill_prompts(kind, split, limit=n, seed=seed)
    return [type(i)(i.kind, i.prompt, i.mixture, {**i.ref, "text": i.ref["x"]}) for i in items]


def build(engine, kind: str, split: str, n: int, seed: int = 0, cache: Path | None = None,
          batch: int = 16, progress: bool = True) -> list[CompositeExample]:
    """``n`` composite examples of ``kind``; the French halves come from the engine's ``translate_fr``."""
    from .engine import Column
    from .generation import GenerationOptions

    items = _items(kind, split, n, seed)
    weights = Path(engine.adapters["translate_fr"].folder) / "adapter_model.safetensors"
    stamp = hashlib.sha1(weights.read_bytes()).hexdigest() if weights.is_file() else ""
    key = hashlib.sha1(f"{kind}|{split}|{n}|{seed}|{stamp}".encode()).hexdigest()[:10]
    path = Path(cache) / f"{kind}.{split}.{n}.{seed}.{key}.jsonl" if cache else None
    if path is not None and path.is_file():
        return [CompositeExample(**json.loads(l)) for l in path.read_text(encoding="utf-8").splitlines() if l]
    english = [english_to_translate(kind, i.ref) for i in items]
    french = [""] * len(items)
    order = sorted(range(len(items)), key=lambda k: len(english[k]))
    from tqdm.auto import tqdm

    for s in tqdm(range(0, len(order), batch), desc=f"compose {kind}", disable=not progress, mininterval=5):
        chunk = order[s : s + batch]
        cols = [Column("translate", "translate_fr", {"translate_fr": 1.0})] * len(chunk)
        last, cap = None, min(160, 24 + max(len(english[k]) for k in chunk) // 2)  # ~2 chars a token, French longer
        for last in engine.stream([TRANSLATE_PROMPT.format(x=english[k]) for k in chunk], cols,
                                  GenerationOptions(max_new_tokens=cap), every=10_000):
            pass
        for j, k in enumerate(chunk):
            french[k] = last.state.texts[j]
    out = [CompositeExample(kind, i.prompt, compose(kind, f, i.ref), {**i.ref, "french": compose(kind, f, i.ref)})
           for i, f in zip(items, french)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in out), encoding="utf-8")
    return out


def build_all(engine, split: str, n: int, cache: Path | None, kinds=EVAL_KINDS) -> list[CompositeExample]:
    return [e for kind in kinds if all(a in engine.names for a in KINDS[kind][0])
            for e in build(engine, kind, split, n, cache=cache)]
