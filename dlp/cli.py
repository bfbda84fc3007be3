"""``python -m dlp``: route, generate, compare, bench, train and evaluate from the shell."""

from __future__ import annotations

import argparse
import sys

from .errors import DLPError


def cmd_train_adapter(args) -> int:
    from pathlib import Path

    from .base_model import load_base, pick_device
    from .manifest import load_manifest
    from .tasks import TASKS
    from .training import train_adapter

    manifest = load_manifest(args.manifest)
    tasks = TASKS if args.task == "all" else [args.task]
    for task in tasks:
        if task not in TASKS:
            raise DLPError(f"Unknown task '{task}'. Available: {', '.join(TASKS)}, all")
    device, dtype = pick_device("cpu" if args.cpu else None)
    base = load_base(manifest.base_sources, device, dtype)
    for task in tasks:
        info = train_adapter(base.model, base.tokenizer, task, Path(args.out) / task)
        print(f"{task}: final loss {info['final_loss']:.3f} in {info['train_seconds']} s -> {Path(args.out) / task}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dlp", description=__doc__)
    parser.add_argument("--manifest", default=None, help="adapters_manifest.json to use")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train-adapter", help="train one task adapter (or all) on ../shared/datasets")
    p.add_argument("--task", required=True)
    p.add_argument("--out", default="assets/adapters")
    p.add_argument("--cpu", action="store_true")
    p.set_defaults(func=cmd_train_adapter)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DLPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
