"""``python -m dlp train-router``: the router trained on the tasks' prompts, checked on held-out ones."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .errors import DLPError

HELD_OUT_SEED = 7  # held-out prompts use other items (test splits) and another phrasing draw


def router_data(labels: list[str], per_task: int) -> tuple[list[tuple[str, object]], dict[str, list]]:
    """Training pairs (prompt, label index or soft mixture) and the held-out sets: templated single-task
    items, everyday prompts (``base``) and two-skill prompts."""
    from .composite import KINDS, two_skill_prompts
    from .everyday import BASE, everyday_prompts
    from .tasks import TASKS, load_examples

    unknown = [n for n in labels if n not in TASKS and n != BASE]
    if unknown:
        raise DLPError(f"No training data for adapter(s) {', '.join(unknown)}; train-router knows {', '.join(TASKS)}")
    index = {n: i for i, n in enumerate(labels)}
    train, held = [], {"single": [], "everyday": [], "two_skill": []}
    for task in labels:
        if task == BASE:
            continue
        y = index[task]
        for seed in (0, 1, 2):  # three phrasing draws of the same items
            train += [(p, y) for ex in load_examples(task, "train", limit=per_task, seed=seed) for p in views(ex.prompt)]
        held["single"] += [(p, y) for ex in load_examples(task, "test", limit=300, seed=HELD_OUT_SEED)
                           for p in views(ex.prompt)]
    if BASE in index:
        train += [(p, index[BASE]) for seed in (0, 1) for p in everyday_prompts("train", seed)]
        held["everyday"] = [(p, index[BASE]) for p in everyday_prompts("test")]
    for kind, ((a, b), _, _) in KINDS.items():
        if a in index and b in index:
            for seed in (0, 1):
                train += [(t.prompt, {index[a]: 0.5, index[b]: 0.5})
                          for t in two_skill_prompts(kind, "train", limit=per_task // 2, seed=seed)]
            held["two_skill"] += [(t.prompt, (index[a], index[b]))
                                  for t in two_skill_prompts(kind, "test", limit=100, seed=HELD_OUT_SEED)]
    return train, held


_TEST_CLAUSE = re.compile(r"\s*It should pass this test: .*$", re.S)
_CODE_ASK = re.compile(r"Write a (?:python )?function (?:to|that) (.+)$", re.I | re.S)
_CODE_ASKS = ["how do I {x} in python?", "Can you give me Python code to {x}?", "python code to {x}",
              "I need a script that can {x}.", "Show me how to {x} with Python.", "What's the Python for: {x}"]


def views(prompt: str) -> list[str]:
    """The prompt, the same request without MBPP's test clause (people ask for code without an
    assert, and a router that learned to key on 'assert' misses them), and for some prompts an
    all-lowercase copy (people type "how do i ... in python")."""
    from .tasks import _bucket

    bare = _TEST_CLAUSE.sub("", prompt)
    out = [prompt, bare] if bare != prompt and bare.strip() else [prompt]
    ask = _CODE_ASK.search(bare)
    if ask:  # MBPP always says "Write a function to ..."; people also ask "how do I ... in python"
        rest = ask.group(1).rstrip(".")
        out.append(_CODE_ASKS[_bucket("ask:" + prompt) % len(_CODE_ASKS)].format(x=rest))
    if _bucket("lower:" + prompt) < 25:
        out.append(out[-1].lower())
    return out


def two_skill_rate(router, tokenizer, items: list[tuple[str, tuple[int, int]]], top_p: float = 0.9) -> float:
    """Share of two-skill prompts where top-p keeps both adapters and the weaker gets weight >= 0.2."""
    from .selection import select

    if not items:
        return float("nan")
    hits = 0
    for k in range(0, len(items), 256):
        chunk = items[k : k + 256]
        for (_, (a, b)), probs in zip(chunk, router.probs(tokenizer, [p for p, _ in chunk])):
            kept = select(probs, list(range(len(probs))), top_p)
            hits += a in kept and b in kept and min(kept[a], kept[b]) >= 0.2
    return hits / len(items)


def run(args) -> int:
    from .base_model import load_tokenizer
    from .everyday import BASE
    from .manifest import load_manifest
    from .router import confusion, format_confusion, save_router, train_router
    from .router_extend import write_replay

    manifest = load_manifest(args.manifest)
    out = Path(args.out) if args.out else manifest.router_path
    if out is None:
        raise DLPError("No router path: set router.path in the manifest or pass --out")
    tokenizer = load_tokenizer(manifest.base_sources)
    labels = [BASE, *manifest.names]
    train, held = router_data(labels, args.per_task)
    start = time.perf_counter()
    embed = getattr(args, "embed_init", "random")
    init = None
    if embed in ("base", "base-frozen"):
        from .router import RouterConfig
        from .router_init import base_embeddings_init

        init = base_embeddings_init(manifest, RouterConfig.embed_dim)
    router = train_router(tokenizer, train, labels, epochs=args.epochs, embed_init=init,
                          freeze_embed=embed == "base-frozen")
    seconds = time.perf_counter() - start
    matrix = confusion(router, tokenizer, held["single"] + held["everyday"])
    single = confusion(router, tokenizer, held["single"])
    accuracy = float(single.diag().sum() / single.sum())
    everyday = confusion(router, tokenizer, held["everyday"])
    base_top1 = float(everyday[:, 0].sum() / max(1, everyday.sum()))
    two = two_skill_rate(router, tokenizer, held["two_skill"])
    n_params = sum(p.numel() for p in router.parameters())
    stats = {"held_out_accuracy": round(accuracy, 4), "everyday_base_top1": round(base_top1, 4),
             "two_skill_both_kept": round(two, 4), "n_params": n_params}
    save_router(router, out, stats)
    write_replay(out, train, labels)  # what add-adapter replays so the shipped labels stay right
    (out / "confusion.json").write_text(json.dumps({"labels": labels, "matrix": matrix.tolist()}))
    (out / "README.md").write_text(
        f"""# DLP router (mini-MLP) for {', '.join(labels)}

- **Model**: token embeddings pooled by a learned per-token weight ({router.cfg.embed_dim}-d over the base tokenizer's {router.cfg.vocab_size} ids)
  -> LayerNorm -> 2 x {router.cfg.hidden}-unit GELU MLP -> softmax over {len(labels)} labels; {n_params / 1e6:.2f}M parameters.
  The embedding tables are stored in float16 (half the file, probabilities move by ~1e-3), the MLP in float32.
- **Labels**: `base` is the "no adapter" answer (a zero LoRA): kept alone, the fused column is the base model;
  kept beside adapters, its weight scales their delta down. The others are the shipped adapters.
- **Training data** ({len(train)} prompts, {args.epochs} epochs, {seconds:.0f} s on the CPU):
  - single-task prompts from the adapters' training splits, 3 phrasing draws each (one-hot targets);
  - two-skill prompts (8 kinds, e.g. "write a Python function that solves this word problem", "translate this review
    and say if it is positive") from training items, with soft 0.5 / 0.5 targets (`dlp/composite.py`);
  - everyday prompts for `base`: hand-written greetings, chit-chat, creative, advice and general-knowledge requests, and
    BoolQ's questions without their passages (`dlp/everyday.py`).
  Sources and licenses: GSM8K (MIT), MBPP (CC BY 4.0), Tatoeba EN-FR (CC BY 2.0 FR, tatoeba.org contributors), UCI Sentiment
  Labelled Sentences (CC BY 4.0), ARC-Easy (CC BY-SA 4.0), SciTLDR (Apache-2.0), SQuAD (CC BY-SA 4.0), BoolQ (CC BY-SA 3.0).
  The raw data is not in this repository.
- **Held-out checks** (test splits, another phrasing draw):
  - single-task top-1: **{accuracy:.2%}** on {len(held['single'])} prompts;
  - everyday prompts with `base` on top: **{base_top1:.2%}** on {len(held['everyday'])} prompts;
  - two-skill prompts with both adapters kept at top-p 0.9 and the weaker at weight >= 0.2: **{two:.2%}** on {len(held['two_skill'])} prompts.
  Confusion matrix (rows: true, columns: predicted; single-task and everyday) in `confusion.json`.
- **Replay set** (`replay.jsonl`): 600 of the training prompts above (60 per label, 15 per two-skill kind), kept so
  `python -m dlp add-adapter` can teach the router a new label without the original data. They are excerpts of the
  datasets named above, under those datasets' licenses and attributions.
- **Reproduce**: `python -m dlp train-router`
"""
    )
    if args.json:
        print(json.dumps({**stats, "n_train": len(train), "labels": labels, "confusion": matrix.tolist(), "out": str(out)}))
    else:
        print(f"single-task top-1 {accuracy:.2%}, everyday->base {base_top1:.2%}, two-skill both kept {two:.2%} "
              f"({n_params / 1e6:.2f}M parameters, {seconds:.0f} s)\n{format_confusion(matrix, labels)}\nsaved to {out}")
    return 0
