"""Teaching the router one more adapter from a few example prompts, without the original data.

The router folder keeps a small replay set (``replay.jsonl``: prompts and targets for the labels it
already knows). Adding a label appends one output row and fine-tunes the router on the replay set plus
the new examples, so the old labels stay right; the previous files are kept so a removal restores them
exactly.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Callable

import torch
from .errors import DLPError
from .router import MiniMLPRouter, RouterConfig, load_router, save_router

REPLAY = "replay.jsonl"
HISTORY = "history"  # history/<label>/: the router as it was before <label> was added
FILES = ("router.safetensors", "router_config.json", REPLAY)


def write_replay(folder: Path, items: list[tuple[str, object]], labels: list[str], per_label: int = 60,
                 seed: int = 0) -> int:
    """Keep ``per_label`` training prompts per label (and some two-skill ones) beside the router."""
    rng = random.Random(seed)
    by_label: dict[str, list] = {}
    for prompt, target in items:
        key = labels[target] if isinstance(target, int) else "+".join(labels[i] for i in sorted(target))
        by_label.setdefault(key, []).append(
            {"prompt": prompt, "target": {labels[target]: 1.0} if isinstance(target, int)
             else {labels[i]: share for i, share in target.items()}})
    rows = []
    for key, group in sorted(by_label.items()):
        rng.shuffle(group)
        rows += group[: per_label if "+" not in key else per_label // 4]
    Path(folder, REPLAY).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def read_replay(folder: Path) -> list[dict]:
    path = Path(folder) / REPLAY
    if not path.is_file():
        raise DLPError(f"The router in {folder} has no {REPLAY}, so it cannot learn a new adapter without its data",
                       hint="retrain it once with: python -m dlp train-router (it writes the replay set)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def with_new_label(router: MiniMLPRouter, label: str) -> MiniMLPRouter:
    """The same router with one more output, initialised to be unlikely until trained."""
    cfg = RouterConfig(**{**router.cfg.__dict__, "labels": (*router.cfg.labels, label)})
    bigger = MiniMLPRouter(cfg)
    state = router.state_dict()
    head = bigger.mlp[-1]
    with torch.no_grad():
        for k, v in state.items():
            if k.startswith("mlp.6."):
                continue
            bigger.state_dict()[k].copy_(v)
        head.weight[:-1].copy_(router.mlp[-1].weight)
        head.bias[:-1].copy_(router.mlp[-1].bias)
        head.weight[-1].normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
        head.bias[-1].fill_(float(router.mlp[-1].bias.min()))
    bigger.embed.weight = router.embed.weight  # frozen while a label is taught (see teach): shared, not copied
    return bigger


def teach(router: MiniMLPRouter, tokenizer, replay: list[dict], examples: list[str], label: str,
          steps: int = 400, lr: float = 3e-3, seed: int = 0,
          progress: Callable[[float], None] | None = None) -> MiniMLPRouter:
    """Fine-tune on the replay set plus the new examples (repeated so they weigh like one replay label);
    ``progress`` hears the finished share now and then (the page's progress bar)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    labels = list(router.cfg.labels)
    index = {n: i for i, n in enumerate(labels)}
    # Replay prompts that read like the new examples are what the user is re-labelling ("write a poem"
    # was an everyday prompt until a poetry adapter came): leave those out instead of fighting them.
    new_words = [_words(e) for e in examples]
    replay = [r for r in replay if max(_overlap(_words(r["prompt"]), w) for w in new_words) < 0.3]
    items = [(r["prompt"], {index[k]: v for k, v in r["target"].items() if k in index}) for r in replay]
    items = [(p, t) for p, t in items if t]
    per_label = max(1, len(items) // max(1, len(labels) - 1))
    views = [v for e in examples for v in (e, e.lower())]
    items += [(v, {index[label]: 1.0}) for v in views] * max(1, 3 * per_label // len(views))
    encoded = [(router.ids(tokenizer, [p])[0], t) for p, t in items]
    # The embedding tables are most of the model and hold what the old labels rely on: train the pooling
    # weights and the MLP only, so a handful of new prompts cannot move the shared token embeddings. Each
    # new example is also seen lower-cased and with words dropped.
    router.embed.weight.requires_grad_(False)
    params = [p for p in router.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    router.train()
    done = 0
    while done < steps:
        rng.shuffle(encoded)
        for k in range(0, len(encoded), 64):
            if done == steps:
                break
            done += 1
            chunk = encoded[k : k + 64]
            rows = [ids[torch.rand(len(ids)) >= 0.15] for ids, _ in chunk]  # token dropout, as in training
            rows = [r if len(r) else ids[:1] for r, (ids, _) in zip(rows, chunk)]
            offsets = torch.tensor([0] + [len(r) for r in rows[:-1]]).cumsum(0)
            target = torch.zeros(len(chunk), len(labels))
            for i, (_, t) in enumerate(chunk):
                for j, share in t.items():
                    target[i, j] = share
            target = target / target.sum(-1, keepdim=True)
            loss = -(target * torch.log_softmax(router(torch.cat(rows), offsets), -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None and done % 20 == 0:
                progress(done / steps)
    router.embed.weight.requires_grad_(True)
    return router.eval()


def without_label(router: MiniMLPRouter, label: str) -> MiniMLPRouter:
    """The router with ``label``'s output row dropped: the other labels keep their relative probabilities."""
    keep = [i for i, n in enumerate(router.cfg.labels) if n != label]
    cfg = RouterConfig(**{**router.cfg.__dict__, "labels": tuple(router.cfg.labels[i] for i in keep)})
    smaller = MiniMLPRouter(cfg)
    state = router.state_dict()
    state["mlp.6.weight"], state["mlp.6.bias"] = state["mlp.6.weight"][keep], state["mlp.6.bias"][keep]
    smaller.load_state_dict(state)
    if smaller.embed.weight.data_ptr() != router.embed.weight.data_ptr():
        smaller.embed.weight = router.embed.weight  # frozen when labels are taught: share, don't copy
    return smaller.eval()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def _extras(folder: Path) -> dict:
    """What router_config.json holds beside the config itself (scores, the labels added since training)."""
    raw = json.loads((Path(folder) / "router_config.json").read_text())
    return {k: v for k, v in raw.items() if k not in RouterConfig.__dataclass_fields__}


def add_label(folder: Path, tokenizer, label: str, examples: list[str]) -> MiniMLPRouter:
    """Extend the router in ``folder`` with ``label`` learned from ``examples``; keeps the previous files."""
    folder = Path(folder)
    router = load_router(folder)
    if label in router.cfg.labels:
        raise DLPError(f"The router already has a label '{label}'")
    replay = read_replay(folder)
    backup = folder / HISTORY / label
    if backup.exists():
        shutil.rmtree(backup)
    backup.mkdir(parents=True)
    for name in FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, backup / name)
    extended = teach(with_new_label(router, label), tokenizer, replay, examples, label)
    extra = _extras(folder)
    save_router(extended, folder, {**extra, "added": [*extra.get("added", []), label]})
    with open(folder / REPLAY, "a", encoding="utf-8") as fh:  # the next addition must keep this one right too
        fh.writelines(json.dumps({"prompt": e, "target": {label: 1.0}}) + "\n" for e in examples)
    return extended


def remove_label(folder: Path, label: str) -> None:
    """Restore the router as it was before ``label`` was added, or (if others were added since) drop its
    output row, which leaves the other labels' relative probabilities unchanged."""
    folder = Path(folder)
    router = load_router(folder)
    if label not in router.cfg.labels:
        raise DLPError(f"The router has no label '{label}'")
    backup = folder / HISTORY / label
    extra = _extras(folder)
    added = extra.get("added", [])
    if backup.is_dir() and added and added[-1] == label:
        for name in FILES:
            if (backup / name).is_file():
                shutil.copy2(backup / name, folder / name)
        shutil.rmtree(backup)
        return
    extra["added"] = [a for a in added if a != label]
    save_router(without_label(router, label), folder, extra)
    replay = [r for r in read_replay(folder) if label not in r["target"]]
    (folder / REPLAY).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replay), encoding="utf-8")
    if backup.is_dir():
        shutil.rmtree(backup)
