"""Teaching the router one more adapter from a few example prompts, without the original data.

The router folder keeps a small replay set (``replay.jsonl``: prompts and targets for the labels it
already knows). Adding a label leaves the router as it is and trains a small head for the new label on
the replay set plus the new examples; the head reads frozen sentence vectors beside the router's own
features, which is what carries a few examples to prompts worded otherwise (README, issue 18). The
previous files are kept so a removal restores them exactly.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import DLPError
from .router import MiniMLPRouter, RouterConfig, label_head, load_router, save_router

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
    """The same router (its table, MLP and earlier heads shared, not copied) with one more label, whose
    logit comes from a new label head, started unlikely until taught."""
    from .sentence_vectors import shared

    dim = shared().dim
    if router.cfg.sentence_dim not in (0, dim):
        raise DLPError(f"The router's label heads read {router.cfg.sentence_dim}-dim sentence vectors, "
                       f"the shipped ones have {dim}", hint="remove the labels added since, then add them again")
    cfg = replace(router.cfg, labels=(*router.cfg.labels, label), heads=(*router.cfg.heads, label),
                  sentence_dim=dim)
    return MiniMLPRouter.sharing(router, cfg, [*router.heads, label_head(cfg)])  # teach() sets its start


def teach(router: MiniMLPRouter, tokenizer, replay: list[dict], examples: list[str], label: str,
          steps: int = 300, lr: float = 3e-3, seed: int = 0,
          progress: Callable[[float], None] | None = None) -> MiniMLPRouter:
    """Train the new label's head (the router's last) and nothing else: the examples move to the new label,
    the replay prompts keep their probability on the labels they had, so the labels the router already
    knows route exactly as before wherever the new head stays low. ``progress`` hears the finished share
    now and then (the page's progress bar)."""
    labels = list(router.cfg.labels)
    if not router.heads or router.cfg.heads[-1] != label or labels[-1] != label:
        raise DLPError(f"'{label}' is not the router's newest label head", hint="make it with with_new_label")
    # Replay prompts that read like the new examples are what the user is re-labelling ("write a poem"
    # was an everyday prompt until a poetry adapter came): leave those out instead of fighting them.
    new_words = [_words(e) for e in examples]
    prompts = [r["prompt"] for r in replay
               if any(k in labels[:-1] for k in r["target"])
               and max(_overlap(_words(r["prompt"]), w) for w in new_words) < 0.3]
    prompts += examples
    new = torch.arange(len(prompts)) >= len(prompts) - len(examples)
    with torch.no_grad():
        router.eval()
        h = router.features(router.pooled(*router.ids(tokenizer, prompts)))
        x = router.head_inputs(h, router.sentences(prompts))
        before = torch.cat([router.mlp[-1](h), *(head(x) for head in router.heads[:-1])], -1)
    # The examples weigh a quarter of the replay set together: enough to claim their kind, not everything.
    weight = torch.where(new, (~new).sum() / new.sum() / 4, torch.tensor(1.0))
    head = router.heads[-1]
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # a start set by ``seed``, the process's RNG untouched
        torch.manual_seed(seed)
        for m in head:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        head[-1].bias.fill_(float(router.mlp[-1].bias.min()))  # unlikely until taught
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    for step in range(steps):
        logp = torch.cat([before, head(x)], -1).log_softmax(-1)
        nll = torch.where(new, -logp[:, -1], -torch.log1p(-logp[:, -1].exp().clamp(max=1 - 1e-6)))
        loss = (weight * nll).sum() / weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None and (step + 1) % 20 == 0:
            progress((step + 1) / steps)
    return router.eval()


def without_label(router: MiniMLPRouter, label: str) -> MiniMLPRouter:
    """The router without ``label``: the other labels keep their relative probabilities."""
    cfg = router.cfg
    labels = tuple(n for n in cfg.labels if n != label)
    if label in cfg.heads:
        keep = [h for n, h in zip(cfg.heads, router.heads) if n != label]
        return MiniMLPRouter.sharing(router, replace(cfg, labels=labels, heads=tuple(n for n in cfg.heads if n != label)),
                                     keep)
    # A row of the MLP's output layer (a label trained in, or taught before label heads existed).
    rows = [i for i, n in enumerate(cfg.labels[: len(cfg.labels) - len(cfg.heads)]) if n != label]
    out = nn.Linear(cfg.hidden, len(rows))
    with torch.no_grad():
        out.weight.copy_(router.mlp[-1].weight[rows])
        out.bias.copy_(router.mlp[-1].bias[rows])
    return MiniMLPRouter.sharing(router, replace(cfg, labels=labels), list(router.heads),
                                 nn.Sequential(*router.mlp[:-1], out))


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
