"""A router for any stack, from examples alone: ``python -m dlp init-router``.

``train-router`` needs our seven tasks' data. A stack of someone else's base model and LoRAs has none of
it, only a few prompts per adapter. This trains the same mini-MLP over the manifest base's own tokenizer
from each adapter's example prompts (its manifest ``examples`` plus its ``examples_file``, at least
``MIN_EXAMPLES``), the everyday prompts that ship with the project for ``base``, and pairs of two
adapters' examples joined into one request with soft 0.5 / 0.5 targets (so two-skill prompts keep both).
Small lists are repeated with lowercase copies; the training's token dropout keeps the router from
keying on one word of them. A replay set is written beside it, so ``add-adapter`` works afterwards.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

from .errors import DLPError

MIN_EXAMPLES = 10
PER_LABEL = 240  # training rows per label after repetition (a few seconds of training each)
JOINS = ("{a} Also, {b}", "{a}\n{b}", "{b} And {a}")


def adapter_examples(manifest) -> dict[str, list[str]]:
    """Each adapter's example prompts (manifest ``examples`` + ``examples_file``); names every adapter short of
    ``MIN_EXAMPLES`` in one error."""
    from .adapter_admin import read_examples

    out, short = {}, []
    for spec in manifest.adapters:
        prompts = list(spec.examples)
        if spec.examples_file is not None:
            try:
                prompts += read_examples(spec.examples_file, minimum=0)
            except DLPError as exc:
                raise DLPError(f"Adapter '{spec.name}': {exc}") from None
        prompts = list(dict.fromkeys(p.strip() for p in prompts if p.strip()))
        if len(prompts) < MIN_EXAMPLES:
            short.append(f"{spec.name} ({len(prompts)})")
        out[spec.name] = prompts
    if short:
        raise DLPError(f"init-router needs at least {MIN_EXAMPLES} example prompts per adapter; too few for: "
                       f"{', '.join(short)}",
                       hint='name a JSONL file of {"prompt": "..."} lines as the adapter\'s "examples_file" in the '
                            "manifest (prompts a visitor would type for it)")
    return out


def training_items(examples: dict[str, list[str]], everyday: list[str], seed: int = 0) -> list[tuple[str, object]]:
    """(prompt, target) rows: label 0 is ``base``; adapters follow in ``examples`` order."""
    from .router_training import views

    rng = random.Random(seed)
    names = list(examples)
    rows: list[tuple[str, object]] = []
    for i, name in enumerate(names, start=1):
        pool = [v for p in examples[name] for v in dict.fromkeys([*views(p), p.lower()])]
        rows += [(p, i) for p in itertools.islice(itertools.cycle(rng.sample(pool, len(pool))), PER_LABEL)]
    rows += [(p, 0) for p in rng.sample(everyday, min(len(everyday), 2 * PER_LABEL))]
    for (i, a), (j, b) in itertools.combinations(enumerate(names, start=1), 2):
        for k in range(max(4, PER_LABEL // (4 * max(1, len(names) - 1)))):
            text = JOINS[k % len(JOINS)].format(a=rng.choice(examples[a]), b=rng.choice(examples[b]))
            rows.append((text, {i: 0.5, j: 0.5}))
    rng.shuffle(rows)
    return rows


def base_embeddings_init(manifest, dim: int):
    """The manifest base's input embeddings, projected to the router's width (see
    :func:`dlp.router.projected_embeddings`): with ten examples per label, a router that starts from them routes
    new wordings far better than one that starts from random numbers (README, "Bring your whole stack")."""
    import gc

    from .base_model import load_base
    from .router import projected_embeddings

    base = load_base(manifest.base_sources)
    table = base.model.get_input_embeddings().weight
    init = projected_embeddings(table, dim)
    del base, table
    gc.collect()
    return init


def init_router(manifest, out: Path | None = None, epochs: int = 6, seed: int = 0, progress: bool = True,
                embed_init: str = "base") -> dict:
    from .base_model import load_tokenizer
    from .everyday import BASE, everyday_prompts
    from .router import RouterConfig, save_router, train_router
    from .router_extend import write_replay

    out = Path(out) if out else manifest.router_path
    if out is None:
        raise DLPError("No router path: set router.path in the manifest or pass --out")
    examples = adapter_examples(manifest)
    tokenizer = load_tokenizer(manifest.base_sources)
    labels = [BASE, *examples]
    rows = training_items(examples, everyday_prompts("train", seed), seed)
    start = time.perf_counter()
    init = base_embeddings_init(manifest, RouterConfig.embed_dim) if embed_init == "base" else None
    router = train_router(tokenizer, rows, labels, epochs=epochs, seed=seed, progress=progress, embed_init=init)
    seconds = time.perf_counter() - start
    held = everyday_prompts("test", seed)[:200]
    probs = router.probs(tokenizer, held) if held else None
    base_top1 = float((probs.argmax(-1) == 0).float().mean()) if probs is not None else None
    fit = router.probs(tokenizer, [p for ps in examples.values() for p in ps]).argmax(-1).tolist()
    want = [i for i, ps in enumerate(examples.values(), start=1) for _ in ps]
    stats = {"examples_top1": round(sum(a == b for a, b in zip(fit, want)) / len(want), 4),
             "everyday_base_top1": None if base_top1 is None else round(base_top1, 4),
             "n_params": sum(p.numel() for p in router.parameters()), "train_seconds": round(seconds, 1),
             "initialised_from": "examples", "embed_init": embed_init}
    save_router(router, out, stats)
    write_replay(out, rows, labels)
    counts = ", ".join(f"{n} {len(ps)}" for n, ps in examples.items())
    (out / "README.md").write_text(
        f"# DLP router for {', '.join(labels)}, initialised from examples\n\n"
        f"- Trained by `python -m dlp init-router` over the base tokenizer's {router.cfg.vocab_size} ids in "
        f"{seconds:.0f} s: the adapters' example prompts ({counts}), repeated with lowercase copies to "
        f"{PER_LABEL} rows each; {min(len(everyday_prompts('train', seed)), 2 * PER_LABEL)} everyday prompts for "
        f"`base` (the project's hand-written greetings, chit-chat and general questions, plus BoolQ's questions, "
        f"CC BY-SA 3.0, where that data is present); pairs of two adapters' examples joined into one request, "
        f"with 0.5 / 0.5 targets.\n"
        + ("- The token table started from the base model's input embeddings, projected on their principal axes "
           "(new wordings of an adapter's requests land near its examples).\n" if embed_init == "base" else "")
        + f"- On its own examples: top-1 {stats['examples_top1']:.0%}. Held-out everyday prompts with `base` on top: "
        + (f"{base_top1:.0%}" if base_top1 is not None else "n/a") + ".\n"
        f"- A few examples teach a narrow router: add prompts phrased the way your visitors write, and rerun.\n",
        encoding="utf-8")
    return {**stats, "labels": labels, "n_train": len(rows), "out": str(out)}
