"""``python -m dlp``: route, generate, compare, bench, train and evaluate from the shell.

Every command takes ``--manifest PATH``; ``--json`` prints one JSON object per line. Bad input
prints one line saying what is wrong and what to do, and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import DLPError


def _emit(args, obj: dict, text: str) -> None:
    print(json.dumps(obj, ensure_ascii=False) if args.json else text, flush=True)


def _options(args, engine):
    from .generation import GenerationOptions

    d = engine.manifest.defaults
    return GenerationOptions(
        max_new_tokens=d.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens,
        temperature=d.temperature if args.temperature is None else args.temperature,
        seed=args.seed,
        loop_guard=not getattr(args, "no_loop_guard", False),
    )


def cmd_route(args) -> int:
    from .engine import Routing
    from .manifest import load_manifest

    routing = Routing.from_manifest(load_manifest(args.manifest))
    for prompt in args.prompt:
        r = routing.route(prompt, args.top_p, args.top_k, args.weighting, args.min_weight)
        probs = "  ".join(f"{n} {p:.3f}" for n, p in sorted(r.probs.items(), key=lambda kv: -kv[1]))
        sel = " + ".join(f"{n} x {w:.2f}" for n, w in r.selected.items())
        _emit(args, r.as_dict(), f"{prompt[:60]!r}\n  probs: {probs}\n  fused: {sel}   ({r.router_ms:.2f} ms)")
    return 0


def _load_engine(args):
    from .engine import Engine
    from .manifest import load_manifest

    return Engine(load_manifest(args.manifest))


def cmd_generate(args) -> int:
    engine = _load_engine(args)
    update = engine.generate(args.prompt, args.mode, _options(args, engine), args.top_p, args.top_k, args.fusion,
                             args.min_weight)
    col = update.as_dict()["columns"][0]
    _emit(args, {"mode": args.mode, "text": col["text"], "route": update.as_dict()["route"], "timing": col["timing"]},
          f"{col['text']}\n\n[{args.mode}] {_timing_line(col['timing'])}")
    return 0


def _timing_line(t: dict) -> str:
    return (f"router {t['router_ms']:.1f} ms, set-up {t['setup_ms']:.1f} ms, first token {t['ttft_ms']:.0f} ms, "
            f"{t['tokens']} tokens at {t['tokens_per_s']:.1f} tok/s, total {t['total_ms']:.0f} ms")


def cmd_compare(args) -> int:
    engine = _load_engine(args)
    last = None
    for last in engine.compare(args.prompt, args.top_p, args.top_k, args.singles, _options(args, engine),
                               args.weighting, every=10_000, fusion=args.fusion, singles=args.single,
                               min_weight=args.min_weight):
        pass
    out = last.as_dict()
    if args.json:
        _emit(args, out, "")
        return 0
    print("router:", "  ".join(f"{n} {p:.3f}" for n, p in sorted(out["route"]["probs"].items(), key=lambda kv: -kv[1])))
    for col in out["columns"]:
        print(f"\n=== {col['label']} ===\n{col['text']}\n[{_timing_line(col['timing'])}]")
    return 0


def cmd_train_adapter(args) -> int:
    import dataclasses

    import torch

    from .base_model import load_base, pick_device
    from .manifest import load_manifest
    from .tasks import EXAMPLE_TASKS, TASKS
    from .training import TASK_CONFIGS, TrainConfig, train_adapter

    manifest = load_manifest(args.manifest)
    tasks = list(TASKS) if args.task == "all" else args.task.split(",")
    for task in tasks:
        if task not in TASKS + EXAMPLE_TASKS:
            raise DLPError(f"Unknown task '{task}'. Available: {', '.join(TASKS + EXAMPLE_TASKS)}, all")
    if args.steps is not None and args.steps < 1:
        raise DLPError(f"--steps must be >= 1, got {args.steps}")
    device, _ = pick_device("cpu" if args.cpu else None)
    base = load_base(manifest.base_sources, device, torch.float32)  # float32 master weights; bf16 autocast on CUDA
    for task in tasks:
        cfg = TASK_CONFIGS.get(task, TrainConfig())
        if args.steps is not None:
            cfg = dataclasses.replace(cfg, steps=args.steps)
        cfg = dataclasses.replace(cfg, **{k: v for k, v in (("lr", args.lr), ("seed", args.seed)) if v is not None})
        resume = Path(args.resume_from) / task if args.resume_from else None
        if resume is not None and not (resume / "adapter_config.json").exists():
            raise DLPError(f"--resume-from: no adapter at {resume}")
        info = train_adapter(base.model, base.tokenizer, task, Path(args.out) / task, cfg,
                             max_seconds=args.max_seconds, resume_from=resume)
        _emit(args, info, f"{task}: final loss {info['final_loss']:.3f} in {info['train_seconds']} s "
                          f"-> {Path(args.out) / task}")
    return 0


def cmd_train_fusion(args) -> int:
    import dataclasses
    import gc

    from .base_model import cache_root, load_base
    from .composite_answers import build_all
    from .engine import Engine
    from .manifest import load_manifest
    from .tasks import Example

    methods = ["layerwise", "token", "lora"] if args.method == "all" else args.method.split(",")
    for m in methods:
        if m not in ("layerwise", "token", "lora"):
            raise DLPError(f"Unknown learned fusion '{m}'", hint="use layerwise, token, lora or all")
    manifest = load_manifest(args.manifest)
    out = Path(args.out) if args.out else (manifest.fusion_path or manifest.path.parent / "assets" / "fusion")
    engine = Engine(manifest)
    cache = cache_root() / "composite"
    examples = build_all(engine, "train", args.n, cache)
    build_all(engine, "test", args.n_test, cache)  # the scorer's composed references, built once here
    if args.compose_only:
        _emit(args, {"examples": len(examples)}, f"{len(examples)} composite training examples in {cache}")
        return 0
    from .fusion_training import train_fusion, write_card
    from .training import TASK_CONFIGS, train_adapter

    for m in [m for m in methods if m != "lora"]:
        _, info = train_fusion(engine, m, examples, out, epochs=args.epochs, max_len=args.max_len,
                               max_seconds=args.max_seconds, lr=args.lr, balance=args.balance,
                               prior_strength=args.gate_prior, with_base=args.gate_base)
        _emit(args, {k: v for k, v in info.items() if k != "log"},
              f"{m}: loss {info['first_loss']:.3f} -> {info['final_loss']:.3f} in {info['train_seconds']} s -> {out}")
        write_card(out, {n: json.loads((out / f).read_text()) for n, f in
                         (("layerwise", "layerwise.json"), ("token", "token_gate.json")) if (out / f).is_file()})
    if "lora" in methods:
        del engine
        gc.collect()
        base = load_base(manifest.base_sources)
        cfg = TASK_CONFIGS["two_skill"]
        cfg = dataclasses.replace(cfg, steps=max(1, args.epochs * len(examples) // cfg.batch_size), max_len=args.max_len)
        info = train_adapter(base.model, base.tokenizer, "two_skill", out / "two_skill_lora", cfg,
                             max_seconds=args.max_seconds,
                             examples=[Example(e.prompt, e.response) for e in examples])
        _emit(args, info, f"two_skill LoRA: final loss {info['final_loss']:.3f} in {info['train_seconds']} s")
    return 0


def cmd_train_router(args) -> int:
    from .router_training import run

    return run(args)


def cmd_bench(args) -> int:
    from .bench import run

    if args.device:
        os.environ["DLP_DEVICE"] = args.device  # the engine and its start-up subprocesses pick it up
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise DLPError("--device cuda: no CUDA device here", hint="drop --device, or run scripts/gpu_check.sh on a GPU")
    result = run(args.manifest, max_new_tokens=args.tokens, repeats=args.repeats, cold=not args.no_cold)
    print(json.dumps(result))
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(result, indent=1))
    return 0


def cmd_add_adapter(args) -> int:
    from .adapter_admin import add
    from .manifest import DEFAULT_MANIFEST

    if bool(args.path) == bool(args.hub):
        raise DLPError("give exactly one of --path FOLDER or --hub ID")
    out = add(Path(args.manifest or DEFAULT_MANIFEST), args.name, args.path or args.hub, bool(args.hub),
              Path(args.examples), args.task or "", args.color or "")
    _emit(args, out, f"added '{out['added']}' (rank {out['rank']}, {', '.join(out['targets'])}); the router learned it "
                     f"from {out['examples']} prompts -> {out['manifest']}")
    return 0


def cmd_remove_adapter(args) -> int:
    from .adapter_admin import remove
    from .manifest import DEFAULT_MANIFEST

    out = remove(Path(args.manifest or DEFAULT_MANIFEST), args.name)
    _emit(args, out, f"removed '{out['removed']}' from {out['manifest']} and the router")
    return 0


def cmd_init_router(args) -> int:
    from .manifest import load_manifest
    from .router_init import init_router

    out = init_router(load_manifest(args.manifest), args.out, epochs=args.epochs, progress=not args.json,
                      embed_init=args.embed_init)
    _emit(args, out, f"router for {', '.join(out['labels'])} from examples in {out['train_seconds']} s: "
                     f"{out['examples_top1']:.0%} of the examples to their adapter, everyday prompts to base "
                     f"{out['everyday_base_top1'] if out['everyday_base_top1'] is None else format(out['everyday_base_top1'], '.0%')} "
                     f"-> {out['out']}")
    return 0


def cmd_export_mix(args) -> int:
    from .export_mix import export_mix, parse_mix

    from .engine import Engine
    from .manifest import load_manifest

    engine = Engine(load_manifest(args.manifest), with_router=False)
    folder = export_mix(engine, parse_mix(args.mix), Path(args.out))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    _emit(args, {"out": str(folder), "rank": cfg["r"], "targets": cfg["target_modules"]},
          f"wrote {folder} (PEFT LoRA, rank {cfg['r']}, {', '.join(cfg['target_modules'])}); load it with "
          f"add-adapter --path {folder} or any engine that serves PEFT LoRAs")
    return 0


def cmd_eval(args) -> int:
    from .evaluation import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--manifest", default=None, help="adapters_manifest.json to use (default: the repo's)")
    common.add_argument("--json", action="store_true", help="print one JSON object per line")
    routing = argparse.ArgumentParser(add_help=False)
    routing.add_argument("--top-p", type=float, default=None, help="keep adapters until their probability sum reaches P")
    routing.add_argument("--top-k", type=int, default=None, help="keep at most K adapters (0 = no cap)")
    routing.add_argument("--min-weight", type=float, default=0.0,
                         help="drop kept adapters whose fusion weight is under this (0 = the paper's plain top-p)")
    routing.add_argument("--weighting", choices=("renorm", "softmax"), default="renorm",
                         help="renorm: kept probabilities / their sum (paper); softmax: the original repo's code")
    gen = argparse.ArgumentParser(add_help=False)
    gen.add_argument("--max-new-tokens", type=int, default=None)
    gen.add_argument("--temperature", type=float, default=None, help="0 = greedy (default)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--no-loop-guard", action="store_true",
                     help="decode to the cap even when a column repeats itself (the guard ends a column once the "
                          "same 4-64 tokens come three times in a row)")

    parser = argparse.ArgumentParser(prog="python -m dlp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("route", parents=[common, routing], help="router probabilities and fusion weights (no LM)")
    p.add_argument("prompt", nargs="+")
    p.set_defaults(func=cmd_route)
    p = sub.add_parser("generate", parents=[common, routing, gen], help="one column: base, fused or adapter:NAME")
    p.add_argument("--mode", default="fused", help='base | fused | adapter:NAME | mix:NAME=W,NAME=W ("mix:code=0.6,math=0.4")')
    p.add_argument("--fusion", default="renorm", help="renorm | sum | layerwise | token (how a fused mixture is applied)")
    p.add_argument("prompt")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("compare", parents=[common, routing, gen], help="base | top single | fused, one batch")
    p.add_argument("--singles", type=int, default=2,
                   help="at most this many single-adapter columns, from the adapters the router kept")
    p.add_argument("--single", action="append", default=None, metavar="ADAPTER",
                   help="a single-adapter column for this adapter, kept or not (repeat for more)")
    p.add_argument("--fusion", default="renorm",
                   help="renorm | sum | layerwise | token: adds that method's fused column beside DLP's")
    p.add_argument("prompt")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("bench", parents=[common], help="speed and memory ratios, measured side by side")
    p.add_argument("--tokens", type=int, default=64, help="tokens decoded per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cold", action="store_true", help="skip the ~25 s cold start (GGUF conversion)")
    p.add_argument("--save", default=None, help="also write the JSON here (the app shows assets/eval/bench.json)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: CUDA when present")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("train-adapter", parents=[common], help="train a task adapter on ../shared/datasets")
    p.add_argument("--task", required=True, help="a task, a comma-separated list, or all")
    p.add_argument("--out", default="assets/adapters")
    p.add_argument("--steps", type=int, default=None, help="override the task's step budget")
    p.add_argument("--max-seconds", type=float, default=None, help="stop early after this long (and save)")
    p.add_argument("--resume-from", default=None,
                   help="continue the adapters saved under this folder (DIR/<task>) instead of starting afresh")
    p.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    p.add_argument("--seed", type=int, default=None, help="override the seed (data order and phrasings)")
    p.add_argument("--cpu", action="store_true")
    p.set_defaults(func=cmd_train_adapter)
    p = sub.add_parser("train-fusion", parents=[common], help="learned fusion (layerwise, token gate) and the "
                       "baseline LoRA, on composite two-skill examples")
    p.add_argument("--method", default="all", help="layerwise, token, lora (a rank-8 LoRA baseline), or all")
    p.add_argument("--n", type=int, default=200, help="composite training examples per two-skill kind")
    p.add_argument("--n-test", type=int, default=60, help="held-out items per kind whose references are composed")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-len", type=int, default=256, help="tokens per example (long abstracts lose their start)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop each method after this long (and save)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the fusion weights "
                   "(default: 2e-2 layerwise, 3e-3 token)")
    p.add_argument("--balance", choices=("tokens", "lines"), default="tokens",
                   help="loss weights: every token alike (default), or every line of the answer alike (the short "
                        "half and the hand-off count as much as the long half; measured worse, see README)")
    p.add_argument("--gate-prior", type=float, default=0.0,
                   help="token gate: how much of the router's log-weights its logits start from (1: a zero gate is "
                        "renorm; 0, default: the router only picks the adapters, the gate sets the mix)")
    p.add_argument("--gate-base", action="store_true",
                   help="token gate: the base model (no LoRA) is always one of its options, kept by the router or not")
    p.add_argument("--compose-only", action="store_true", help="only build (and cache) the composite examples")
    p.add_argument("--out", default=None, help="folder (default: the manifest's fusion path)")
    p.set_defaults(func=cmd_train_fusion)
    p = sub.add_parser("train-router", parents=[common], help="train the router on the tasks' prompts")
    p.add_argument("--per-task", type=int, default=1200, help="training prompts per task and phrasing seed")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--embed-init", choices=("random", "base", "base-frozen"), default="random",
                   help="start the router's token table from the base model's input embeddings (projected to "
                        "its width) instead of random numbers; base-frozen keeps it there (only the pooling "
                        "weights and the MLP learn)")
    p.add_argument("--out", default=None, help="folder (default: the manifest's router path)")
    p.set_defaults(func=cmd_train_router)
    p = sub.add_parser("add-adapter", parents=[common], help="add your PEFT LoRA and teach the router from examples")
    p.add_argument("--name", required=True)
    p.add_argument("--path", default=None, help="a PEFT LoRA folder (relative to the manifest's folder)")
    p.add_argument("--hub", default=None, help="a hub id (where the hub is reachable)")
    p.add_argument("--examples", required=True, help='a JSONL file, one {"prompt": ...} per line, at least 5')
    p.add_argument("--task", default=None, help="a short task label for the UI")
    p.add_argument("--color", default=None, help="#rrggbb for the charts")
    p.set_defaults(func=cmd_add_adapter)
    p = sub.add_parser("remove-adapter", parents=[common], help="undo add-adapter")
    p.add_argument("--name", required=True)
    p.set_defaults(func=cmd_remove_adapter)
    p = sub.add_parser("init-router", parents=[common], help="a router for the manifest's base and adapters, "
                       "from each adapter's example prompts (any stack; no task data needed)")
    p.add_argument("--out", default=None, help="router folder (default: the manifest's router.path)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--embed-init", choices=("base", "random"), default="base",
                   help="start the router's token table from the base model's input embeddings (default; loads the "
                        "base model once) or from random numbers")
    p.set_defaults(func=cmd_init_router)
    p = sub.add_parser("export-mix", parents=[common], help="write a mixture of adapters as one PEFT LoRA folder")
    p.add_argument("--mix", required=True, help='name=weight pairs, e.g. "code=0.6,math=0.4" (weights as given)')
    p.add_argument("--out", required=True, help="the folder to write")
    p.set_defaults(func=cmd_export_mix)
    p = sub.add_parser("eval", parents=[common], help="base / single / fused / uniform merge on held-out splits")
    p.add_argument("--n", type=int, default=100, help="items per long-answer task (short-answer tasks: twice that)")
    p.add_argument("--n-two-skill", type=int, default=50, help="items per two-skill kind (0: skip that section)")
    p.add_argument("--tasks", default="all", help="comma-separated tasks, all, or none (two-skill section only)")
    p.add_argument("--conditions", default=None, help="generate only these conditions (comma-separated)")
    p.add_argument("--kinds", default=None, help="only these two-skill kinds, e.g. code+math (default: all)")
    p.add_argument("--phase", choices=("all", "generate", "score"), default="all",
                   help="generate replies (GPU-friendly), score them (runs code in a subprocess), or both")
    p.add_argument("--replies", default=None, help="the replies file (default: OUT/replies.jsonl)")
    p.add_argument("--batch", type=int, default=16, help="rows per generate call (a GPU takes 256)")
    p.add_argument("--adapters", default="assets/adapters", help="folder whose adapter cards get the scores")
    p.add_argument("--merge", action="store_true",
                   help="keep OUT/results.json's other rows: only the tasks and kinds scored now are replaced")
    p.add_argument("--out", default="assets/eval")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    from .base_model import quiet_libraries

    quiet_libraries()
    try:
        return args.func(args)
    except DLPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
