"""``python -m dlp eval``: base / single (oracle) / DLP fused / uniform merge on held-out splits.

For each held-out item the four conditions are four rows of one batch (same prompt, no padding),
so the comparison is exact and cheap. Writes ``results.json`` (scores in 0..1) and ``results.md``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from .errors import DLPError

NEW_TOKENS = {"math": 256, "code": 200, "translate_fr": 48, "sentiment": 6, "science_qa": 32, "summarize": 72}
SHORT = {"translate_fr", "sentiment", "science_qa"}  # cheap to decode: evaluate more items
CONDITIONS = ("base", "single", "fused", "uniform_merge")


def _rows_per_batch(task: str) -> int:
    return 4 if task in ("math", "code", "summarize") else 8  # items per batch (x4 conditions)


def evaluate_task(engine, task: str, n: int, progress: bool = True) -> tuple[dict, list[dict]]:
    from tqdm.auto import tqdm

    from .engine import Column
    from .generation import GenerationOptions
    from .metrics import METRICS, score
    from .tasks import load_examples

    examples = load_examples(task, "test", limit=n, seed=0)
    names = engine.names
    uniform = {a: 1.0 / len(names) for a in names}
    options = GenerationOptions(max_new_tokens=NEW_TOKENS[task])
    scores = {c: [] for c in CONDITIONS}
    routed, samples = 0, []
    step = _rows_per_batch(task)
    bar = tqdm(total=len(examples), desc=f"eval {task}", disable=not progress)
    for k in range(0, len(examples), step):
        chunk = examples[k : k + step]
        routes = [engine.route(ex.prompt) for ex in chunk]
        routed += sum(max(r.probs, key=r.probs.get) == task for r in routes)
        prompts, columns = [], []
        for ex, route in zip(chunk, routes):
            for cond, mix in zip(CONDITIONS, ({}, {task: 1.0}, dict(route.selected), uniform)):
                prompts.append(ex.prompt)
                columns.append(Column(cond, cond, mix))
        last = None
        for last in engine.stream(prompts, columns, options, every=10_000):
            pass
        for i, ex in enumerate(chunk):
            for j, cond in enumerate(CONDITIONS):
                reply = last.state.texts[i * len(CONDITIONS) + j]
                scores[cond].append(score(task, reply, ex.ref, ex.prompt))
                if len(samples) < 3 * len(CONDITIONS):
                    samples.append({"prompt": ex.prompt[:300], "condition": cond, "reply": reply[:400],
                                    "score": scores[cond][-1]})
        bar.update(len(chunk))
    bar.close()
    row = {"metric": METRICS[task], "n": len(examples)}
    row.update({c: round(statistics.fmean(v), 4) for c, v in scores.items()})
    row["router_top1"] = round(routed / max(1, len(examples)), 4)
    return row, samples


def _fused_over_single(engine) -> float:
    from .bench import _time_case
    from .generation import GenerationOptions

    prompt = engine.manifest.adapters[0].examples[0] if engine.manifest.adapters[0].examples else "Hello"
    a, b = engine.names[:2]
    opts = GenerationOptions(max_new_tokens=32, min_new_tokens=32)
    single, fused = [], []
    for _ in range(3):
        single.append(_time_case(engine, prompt, [{a: 1.0}], opts)[0])
        fused.append(_time_case(engine, prompt, [{a: 0.6, b: 0.4}], opts)[0])
    return round(statistics.median(fused) / statistics.median(single), 3)


def markdown_table(results: dict) -> str:
    lines = ["| task | metric | n | base | single (oracle) | DLP fused | uniform merge | router top-1 |",
             "|---|---|---|---|---|---|---|---|"]
    for task, r in results["tasks"].items():
        lines.append(f"| {task} | {r['metric']} | {r['n']} | {r['base']:.3f} | {r['single']:.3f} | "
                     f"**{r['fused']:.3f}** | {r['uniform_merge']:.3f} | {r['router_top1']:.1%} |")
    t = results["tasks"].values()
    mean = {c: statistics.fmean(r[c] for r in t) for c in CONDITIONS}
    lines.append(f"| **mean** | | | {mean['base']:.3f} | {mean['single']:.3f} | **{mean['fused']:.3f}** | "
                 f"{mean['uniform_merge']:.3f} | {results['router_accuracy']:.1%} |")
    return ("\n".join(lines) + f"\n\nRouter accuracy on the evaluated prompts: {results['router_accuracy']:.1%}. "
            f"Fused/single decode time (two adapters vs one, same tokens): {results['fused_over_single']:.2f}x. "
            f"Top-p {results['top_p']}. {results['note']}\n")


def _update_card(card: Path, row: dict) -> None:
    """Put the measured score on the adapter card's Metric line."""
    if not card.is_file():
        return
    line = (f"- **Metric**: {row['metric']} on {row['n']} held-out items: **{row['single']:.3f}** with this adapter "
            f"vs {row['base']:.3f} for the base model (`assets/eval/results.md`)")
    text = card.read_text(encoding="utf-8").splitlines()
    card.write_text("\n".join(line if l.startswith("- **Metric**") else l for l in text) + "\n", encoding="utf-8")


def run(args) -> int:
    from .engine import Engine
    from .manifest import load_manifest
    from .tasks import TASKS

    tasks = list(TASKS) if args.tasks == "all" else args.tasks.split(",")
    engine = Engine(load_manifest(args.manifest))
    missing = [t for t in tasks if t not in engine.names]
    if missing:
        raise DLPError(f"No adapter for task(s) {', '.join(missing)}. Loaded: {', '.join(engine.names)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (out / "results.json").is_file():
        previous = json.loads((out / "results.json").read_text()).get("tasks", {})
    started = time.perf_counter()
    results = {"tasks": dict(previous), "samples": {}}
    for task in tasks:
        n = min(200, 3 * args.n) if task in SHORT else args.n
        row, samples = evaluate_task(engine, task, n)
        results["tasks"][task] = row
        results["samples"][task] = samples
        print(json.dumps({task: row}), flush=True)
    results["tasks"] = {t: results["tasks"][t] for t in TASKS if t in results["tasks"]}
    total = sum(r["n"] for r in results["tasks"].values())
    results["router_accuracy"] = round(sum(r["router_top1"] * r["n"] for r in results["tasks"].values()) / total, 4)
    results["fused_over_single"] = _fused_over_single(engine)
    results["top_p"] = engine.manifest.defaults.top_p
    results["note"] = (f"Held-out splits: GSM8K test, MBPP ids 11-510, Tatoeba and UCI hash-held-out items, ARC-Easy test, "
                       f"SciTLDR test; greedy decoding; {time.perf_counter() - started:.0f} s on {engine.device}.")
    samples = results.pop("samples")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "samples.json").write_text(json.dumps(samples, indent=1, ensure_ascii=False))
    (out / "results.md").write_text(markdown_table(results))
    for task, row in results["tasks"].items():
        if task in engine.adapters:
            _update_card(engine.adapters[task].folder / "README.md", row)
    print(markdown_table(results))
    return 0
