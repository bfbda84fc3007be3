"""``python -m dlp train-router``: the router trained on the tasks' prompts, checked on held-out ones."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .errors import DLPError

HELD_OUT_SEED = 7  # held-out prompts use other items (test splits) and another phrasing draw


def router_data(labels: list[str], per_task: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    from .tasks import TASKS, load_examples

    unknown = [n for n in labels if n not in TASKS]
    if unknown:
        raise DLPError(f"No training data for adapter(s) {', '.join(unknown)}; train-router knows {', '.join(TASKS)}")
    train, held = [], []
    for y, task in enumerate(labels):
        for seed in (0, 1, 2):  # three phrasing draws of the same items
            train += [(p, y) for ex in load_examples(task, "train", limit=per_task, seed=seed) for p in views(ex.prompt)]
        held += [(p, y) for ex in load_examples(task, "test", limit=300, seed=HELD_OUT_SEED) for p in views(ex.prompt)]
    return train, held


_TEST_CLAUSE = re.compile(r"\s*It should pass this test: .*$", re.S)


def views(prompt: str) -> list[str]:
    """The prompt, plus the same request without MBPP's test clause: people ask for code without an
    assert, and a router that learned to key on 'assert' misses them."""
    bare = _TEST_CLAUSE.sub("", prompt)
    return [prompt, bare] if bare != prompt and bare.strip() else [prompt]


def run(args) -> int:
    from .base_model import load_tokenizer
    from .manifest import load_manifest
    from .router import confusion, format_confusion, save_router, train_router

    manifest = load_manifest(args.manifest)
    out = Path(args.out) if args.out else manifest.router_path
    if out is None:
        raise DLPError("No router path: set router.path in the manifest or pass --out")
    tokenizer = load_tokenizer(manifest.base_sources)
    labels = manifest.names
    train, held = router_data(labels, args.per_task)
    start = time.perf_counter()
    router = train_router(tokenizer, train, labels, epochs=args.epochs)
    seconds = time.perf_counter() - start
    matrix = confusion(router, tokenizer, held)
    accuracy = float(matrix.diag().sum() / matrix.sum())
    n_params = sum(p.numel() for p in router.parameters())
    save_router(router, out, {"held_out_accuracy": round(accuracy, 4), "n_params": n_params})
    (out / "confusion.json").write_text(json.dumps({"labels": labels, "matrix": matrix.tolist()}))
    (out / "README.md").write_text(
        f"""# DLP router (mini-MLP) for {', '.join(labels)}

- **Model**: token embeddings pooled by a learned per-token weight ({router.cfg.embed_dim}-d over the base tokenizer's {router.cfg.vocab_size} ids)
  -> LayerNorm -> 2 x {router.cfg.hidden}-unit GELU MLP -> softmax over {len(labels)} adapters; {n_params / 1e6:.2f}M parameters.
- **Training data**: prompts from the adapters' training splits, 3 phrasing draws each ({len(train)} prompts), {args.epochs} epochs,
  {seconds:.0f} s on the CPU. Sources and licenses: GSM8K (MIT), MBPP (CC BY 4.0), Tatoeba EN-FR (CC BY 2.0 FR,
  tatoeba.org contributors), UCI Sentiment Labelled Sentences (CC BY 4.0), ARC-Easy (CC BY-SA 4.0), SciTLDR (Apache-2.0).
  The raw data is not in this repository.
- **Held-out accuracy** (test splits, another phrasing draw, {len(held)} prompts): **{accuracy:.2%}**. Confusion matrix
  (rows: true, columns: predicted) in `confusion.json`.
- **Reproduce**: `python -m dlp train-router`
"""
    )
    if args.json:
        print(json.dumps({"held_out_accuracy": accuracy, "n_train": len(train), "n_held_out": len(held),
                          "n_params": n_params, "labels": labels, "confusion": matrix.tolist(), "out": str(out)}))
    else:
        print(f"held-out accuracy: {accuracy:.2%} on {len(held)} prompts ({n_params / 1e6:.2f}M parameters, "
              f"{seconds:.0f} s)\n{format_confusion(matrix, labels)}\nsaved to {out}")
    return 0
