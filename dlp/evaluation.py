"""``python -m dlp eval``: held-out scores for base, single (oracle), DLP fused and uniform merge,
plus a two-skill section, each with a 95% bootstrap interval.

Two phases, so the expensive one can run on a GPU and the scoring (which runs generated code in a
subprocess) wherever the data is: ``generate`` writes every reply to a JSONL file, ``score`` reads it.
Every condition of an item is a row of the same batch, so conditions see the same prompt and padding.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from .errors import DLPError

NEW_TOKENS = {"math": 256, "code": 200, "translate_fr": 48, "sentiment": 6, "science_qa": 32, "summarize": 72,
              "reading_qa": 32}
KIND_TOKENS = {"code+math": 256, "translate_fr+sentiment": 96, "science_qa+translate_fr": 96,
               "summarize+translate_fr": 96, "reading_qa+translate_fr": 48}
SHORT = {"translate_fr", "sentiment", "science_qa", "reading_qa"}  # cheap to decode: twice the items
CONDITIONS = ("base", "single", "fused", "uniform_merge")
FUSION_CONDITIONS = ("sum", "layerwise", "token")  # two-skill rows: each fusion method on the routed kept set
BASELINE = "two_skill_lora"  # a rank-8 LoRA trained directly on the composite examples (assets/fusion/)
CONDITION_NAMES = {"fused": "DLP renorm", "sum": "sum", "layerwise": "layer-wise (learned)",
                   "token": "token gate (learned)", BASELINE: "rank-8 LoRA on the composite examples (baseline)"}


def eval_items(engine, tasks: list[str], n: int, n_two_skill: int, conditions: set[str] | None = None,
               kinds: set[str] | None = None, baseline: bool = False) -> list[dict]:
    """Every (item, condition) row to generate, with what scoring needs; routes once per prompt."""
    from .base_model import cache_root
    from .composite import EVAL_KINDS, KINDS
    from .composite_answers import build
    from .fusion_methods import method_mixture
    from .tasks import load_examples

    adapters = [a for a in engine.names]
    uniform = {a: 1.0 / len(adapters) for a in adapters}
    rows: list[dict] = []

    def add(section, name, k, prompt, ref, conds, tokens):
        if len(engine.tokenizer(prompt)["input_ids"]) > engine.manifest.defaults.max_prompt_tokens - 32:
            return  # a few abstracts and code prompts are over the demo's prompt limit: not evaluated
        route = engine.route(prompt)
        for cond, mix in conds:
            method = "renorm"
            if mix == "max":  # the same kept set, weights divided by the largest (selection's "max" mode)
                mix = dict(engine.route(prompt, mode="max").selected)
            elif cond in FUSION_CONDITIONS:
                mix, method = method_mixture(cond, route.selected)
            rows.append({"id": len(rows), "section": section, "name": name, "item": k, "condition": cond,
                         "method": method,
                         "mixture": dict(route.selected) if mix is None else mix, "prompt": prompt, "ref": ref,
                         "top1": max(route.probs, key=route.probs.get), "selected": route.selected,
                         "max_new_tokens": tokens, "strength": engine.adapters[name].strength
                         if name in engine.adapters else 1.0})

    for task in tasks:
        count = 2 * n if task in SHORT else n
        for k, ex in enumerate(load_examples(task, "test", limit=count, seed=0)):
            add("tasks", task, k, ex.prompt, ex.ref,
                [("base", {}), ("single", {task: 1.0}), ("fused", None), ("uniform_merge", uniform)], NEW_TOKENS[task])
    for kind in EVAL_KINDS:
        (a, b), _, _ = KINDS[kind]
        if a not in adapters or b not in adapters or n_two_skill <= 0 or (kinds and kind not in kinds):
            continue
        learned = [c for c in FUSION_CONDITIONS if c == "sum" or c in engine.learned.available()]
        extra = [(BASELINE, {BASELINE: 1.0})] if baseline else []
        for k, item in enumerate(build(engine, kind, "test", n_two_skill, cache=cache_root() / "composite")):
            add("two_skill", kind, k, item.prompt, item.ref,
                [("base", {}), (f"single:{a}", {a: 1.0}), (f"single:{b}", {b: 1.0}), ("fused", None),
                 *[(c, None) for c in learned], *extra], KIND_TOKENS[kind])
    if conditions:
        rows = [r for r in rows if r["condition"] in conditions]
    return rows


def generate(engine, rows: list[dict], batch: int, progress: bool = True, sink=None, scope=None) -> list[dict]:
    """Greedy replies for every row, batched by reply length and sorted by prompt length (less padding).
    ``sink`` gets each finished chunk at once, so an interrupted run keeps what it generated."""
    from tqdm.auto import tqdm

    from .engine import Column
    from .generation import GenerationOptions

    order = sorted(rows, key=lambda r: (r["max_new_tokens"], len(r["prompt"]), r["id"]))
    bar = tqdm(total=len(rows), desc="generate", disable=not progress, mininterval=5)
    out = {}
    k = 0
    while k < len(order):
        tokens = order[k]["max_new_tokens"]
        chunk = [r for r in order[k : k + batch] if r["max_new_tokens"] == tokens]
        columns = [Column(r["condition"], r["condition"], r["mixture"], r.get("method", "renorm")) for r in chunk]
        last = None
        for last in engine.stream([r["prompt"] for r in chunk], columns, GenerationOptions(max_new_tokens=tokens),
                                  every=10_000, scope=scope):
            pass
        for i, r in enumerate(chunk):
            out[r["id"]] = {**r, "reply": last.state.texts[i]}
        if sink:
            sink([out[r["id"]] for r in chunk])
        k += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return [out[r["id"]] for r in rows]


def bootstrap(values: list[float], reps: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean, resampling items."""
    if not values:
        return [float("nan"), float("nan")]
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return [round(means[int(0.025 * reps)], 4), round(means[int(0.975 * reps) - 1], 4)]


def score(replies: list[dict], progress: bool = True) -> dict:
    """Scores per task and two-skill kind, with intervals; see ``METRICS`` and ``TWO_SKILL_METRICS``."""
    from tqdm.auto import tqdm

    from .metrics import METRICS, TWO_SKILL_METRICS, score as task_score, two_skill_score

    by: dict[tuple, dict[int, dict[str, dict]]] = {}
    for r in tqdm(replies, desc="score", disable=not progress, mininterval=5):
        if r["section"] == "tasks":
            r["score"] = {"score": task_score(r["name"], r["reply"], r["ref"], r["prompt"])}
        else:
            r["score"] = two_skill_score(r["name"], r["reply"], r["ref"])
        by.setdefault((r["section"], r["name"]), {}).setdefault(r["item"], {})[r["condition"]] = r
    results: dict = {"tasks": {}, "composite": {}}
    for (section, name), items in by.items():
        width = max(len(v) for v in items.values())
        ids = sorted(i for i, v in items.items() if len(v) == width)  # an interrupted run leaves partial items
        conds = list(items[ids[0]])
        first = [items[i][conds[0]] for i in ids]
        row = {"n": len(ids), "router_top1": round(statistics.fmean(
            (r["top1"] == name if section == "tasks" else r["top1"] in name.split("+")) for r in first), 4)}
        if section == "tasks":
            row["metric"] = METRICS[name]
            for c in conds:
                vals = [items[i][c]["score"]["score"] for i in ids]
                row[c], row[f"{c}_ci"] = round(statistics.fmean(vals), 4), bootstrap(vals)
            if first[0].get("strength", 1.0) != 1.0:
                row["strength"] = first[0]["strength"]  # the manifest's calibration, as generated
            row["single_minus_base_ci95"] = bootstrap([items[i]["single"]["score"]["score"] -
                                                     items[i]["base"]["score"]["score"] for i in ids])
            row["mean_fused_adapters"] = round(statistics.fmean(
                sum(1 for a in r["selected"] if a != "base") for r in first), 3)
            results["tasks"][name] = row
        else:
            row["metric"] = TWO_SKILL_METRICS[name]
            row["both_kept"] = round(statistics.fmean(
                all(a in r["selected"] for a in name.split("+")) for r in first), 4)
            row["conditions"] = {}
            for c in conds:
                cell = {}
                for skill in items[ids[0]][c]["score"]:
                    vals = [items[i][c]["score"][skill] for i in ids]
                    cell[skill], cell[f"{skill}_ci"] = round(statistics.fmean(vals), 4), bootstrap(vals)
                row["conditions"][c] = cell
            results["composite"][name] = row
    return results


def markdown_table(results: dict) -> str:
    def cell(r, c):
        lo, hi = r[f"{c}_ci"]
        return f"{r[c]:.3f} [{lo:.2f}, {hi:.2f}]"

    lines = ["| task | metric | n | base | single (oracle) | DLP fused | uniform merge | single - base, 95% CI | router top-1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task, r in results["tasks"].items():
        lo, hi = r["single_minus_base_ci95"]
        shown = f"{task} (strength {r['strength']})" if r.get("strength", 1.0) != 1.0 else task
        lines.append(f"| {shown} | {r['metric']} | {r['n']} | {cell(r, 'base')} | {cell(r, 'single')} | "
                     f"**{cell(r, 'fused')}** | {cell(r, 'uniform_merge')} | [{lo:+.3f}, {hi:+.3f}] | {r['router_top1']:.0%} |")
    from .composite import RETIRED_KINDS

    composite = results.get("composite", {})
    for kind in [k for k in composite if k not in RETIRED_KINDS] + [k for k in composite if k in RETIRED_KINDS]:
        r = composite[kind]
        if kind in RETIRED_KINDS and not any(l.startswith("**Footnote") for l in lines):
            lines += ["", "**Footnote: retired kinds.** Their adapters cannot do their own half (math and science_qa "
                          "do not beat the base model), so they say nothing about fusion; measured before the learned "
                          "methods existed."]
        conds = r["conditions"]
        skills = [k for k in next(iter(conds.values())) if not k.endswith("_ci")]
        lines += ["", f"**Two-skill: {kind}** ({r['n']} held-out items; router kept both adapters on "
                      f"{r['both_kept']:.0%}). {r['metric']}.", "",
                  "| condition | " + " | ".join(skills) + " | both, 95% CI |", "|---" * (len(skills) + 2) + "|"]
        for c, v in conds.items():
            lo, hi = v["both_ci"]
            lines.append(f"| {CONDITION_NAMES.get(c, c)} | " + " | ".join(f"{v[k]:.2f}" for k in skills)
                         + f" | [{lo:.2f}, {hi:.2f}] |")
    return "\n".join(lines) + f"\n\n{results.get('note', '')}\n"


def _update_card(card: Path, row: dict) -> None:
    """Put the measured score on the adapter card's Metric line."""
    if not card.is_file():
        return
    lo, hi = row["single_minus_base_ci95"]
    line = (f"- **Metric**: {row['metric']} on {row['n']} held-out items: **{row['single']:.3f}** with this adapter "
            f"vs {row['base']:.3f} for the base model (single - base, 95% bootstrap CI: [{lo:+.3f}, {hi:+.3f}]; "
            f"`assets/eval/results.md`)")
    text = card.read_text(encoding="utf-8").splitlines()
    card.write_text("\n".join(line if l.startswith("- **Metric**") else l for l in text) + "\n", encoding="utf-8")


def baseline_scope(engine):
    """The shared scope plus the composite-trained LoRA (not routed, not on the page), when it was trained."""
    from .adapters import read_adapter
    from .fusion import add_lora, fused_layers

    folder = engine.manifest.fusion_path / BASELINE if engine.manifest.fusion_path else None
    if folder is None or not (folder / "adapter_config.json").is_file():
        return None
    _, weights = read_adapter(BASELINE, folder, engine.model)
    add_lora(fused_layers(engine.model), "~" + BASELINE, weights)
    scope = engine.scope()
    return type(scope)(scope.routing, {**scope.keys, BASELINE: "~" + BASELINE}, scope.colors)


def run(args) -> int:
    from .engine import Engine
    from .manifest import load_manifest
    from .tasks import TASKS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    replies_path = Path(args.replies) if args.replies else out / "replies.jsonl"
    started = time.perf_counter()
    if args.phase in ("generate", "all"):
        tasks = list(TASKS) if args.tasks == "all" else [] if args.tasks == "none" else args.tasks.split(",")
        engine = Engine(load_manifest(args.manifest))
        missing = [t for t in tasks if t not in engine.names]
        if missing:
            raise DLPError(f"No adapter for task(s) {', '.join(missing)}. Loaded: {', '.join(engine.names)}")
        scope = baseline_scope(engine)
        items = eval_items(engine, tasks, args.n, args.n_two_skill,
                           set(args.conditions.split(",")) if args.conditions else None,
                           set(args.kinds.split(",")) if getattr(args, "kinds", None) else None,
                           baseline=scope is not None)
        replies_path.parent.mkdir(parents=True, exist_ok=True)
        with open(replies_path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"device": f"{engine.device} ({engine.model.dtype})", "started": time.time(),
                                 "top_p": engine.manifest.defaults.top_p}) + "\n")

            def sink(chunk):
                done = round(time.perf_counter() - started, 1)
                fh.writelines(json.dumps({**r, "done": done}, ensure_ascii=False) + "\n" for r in chunk)
                fh.flush()

            generate(engine, items, args.batch, sink=sink, scope=scope)
        print(f"{len(items)} replies in {time.perf_counter() - started:.0f} s -> {replies_path}", flush=True)
    if args.phase in ("score", "all"):
        if not replies_path.is_file():
            raise DLPError(f"No replies at {replies_path}", hint="run: python -m dlp eval --phase generate")
        lines = replies_path.read_text(encoding="utf-8").splitlines()
        meta, replies = json.loads(lines[0]), [json.loads(l) for l in lines[1:] if l.strip()]
        meta.setdefault("seconds", round(max((r.get("done", 0) for r in replies), default=0)))
        results = score(replies)
        results["top_p"] = meta["top_p"]
        results["note"] = (f"Held-out splits: GSM8K test, MBPP ids 11-510, Tatoeba/UCI/SQuAD hash-held-out items, ARC-Easy "
                           f"test, SciTLDR test; greedy decoding at top-p {meta['top_p']}; generated in {meta['seconds']} s "
                           f"on {meta['device']}. Intervals: 95% bootstrap over items.")
        old_file = out / "results.json"
        if getattr(args, "merge", False) and old_file.is_file():  # re-run rows replace theirs; the rest stay
            old = json.loads(old_file.read_text())
            redone = sorted([*results["tasks"], *results["composite"]])
            old["tasks"].update(results["tasks"])
            for kind, row in results["composite"].items():  # re-run conditions replace theirs; the others stay
                kept = old.setdefault("composite", {}).get(kind)
                if kept and kept["n"] == row["n"]:
                    row["conditions"] = {**kept["conditions"], **row["conditions"]}
                old["composite"][kind] = row
            old["note"] = (f"{old.get('note', '')} Re-run later: {', '.join(redone)}, generated in {meta['seconds']} s "
                           f"on {meta['device']}.").strip()
            results = old
        results["tasks"] = {t: results["tasks"][t] for t in TASKS if t in results["tasks"]}
        (out / "results.json").write_text(json.dumps(results, indent=1))
        samples = [{k: r[k] for k in ("section", "name", "condition", "prompt", "reply", "score")}
                   for r in replies if r["item"] < 2]
        if getattr(args, "merge", False) and (out / "samples.json").is_file():
            redone = {(r["name"], r["condition"]) for r in samples}
            kept = json.loads((out / "samples.json").read_text(encoding="utf-8"))
            samples = [r for r in kept if (r["name"], r.get("condition")) not in redone] + samples
        (out / "samples.json").write_text(json.dumps(samples, indent=1, ensure_ascii=False))
        (out / "results.md").write_text(markdown_table(results))
        adapters = Path(args.adapters)
        for task, row in results["tasks"].items():
            _update_card(adapters / task / "README.md", row)
        print(markdown_table(results))
    return 0
