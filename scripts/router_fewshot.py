"""Routing on hand-written prompts, and a new label taught from 8 examples (issue 18's bars).

    .venv/bin/python scripts/router_fewshot.py [ROUTER_DIR ...]

For each router folder (default: the manifest's): single-task top-1, everyday prompts -> base and two-skill
prompts with both adapters kept (weaker >= 0.2 at top-p 0.9) on tests/data/natural_prompts.json plus the
two-skill prompts of tests/data/fewshot_label.json; then, on a copy, ``add-adapter``'s teaching of the label
"sql" (then, apart, "email") from 8 examples, scored on 12 other prompts of its kind and on the hand-written
checks again.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def top1(router, tokenizer, prompts):
    probs = router.probs(tokenizer, prompts)
    return [router.cfg.labels[i] for i in probs.argmax(-1).tolist()]


def both_kept(router, tokenizer, items, top_p=0.9):
    from dlp.selection import select

    labels = list(router.cfg.labels)
    hits = 0
    for (_, a, b), probs in zip(items, router.probs(tokenizer, [p for p, _, _ in items])):
        kept = {labels[i]: w for i, w in select(probs, list(range(len(labels))), top_p).items()}
        hits += a in kept and b in kept and min(kept[a], kept[b]) >= 0.2
    return hits


def check(folder: Path, tokenizer) -> dict:
    from dlp.router import load_router
    from dlp.router_extend import add_label

    data = json.loads((ROOT / "tests/data/natural_prompts.json").read_text())
    few = json.loads((ROOT / "tests/data/fewshot_label.json").read_text())
    single = [(p, t) for t, ps in data["single"].items() for p in ps]
    two = [tuple(x) for x in data["two_skill"] + few["two_skill"]]
    router = load_router(folder)
    out = {"single": sum(a == t for a, (_, t) in zip(top1(router, tokenizer, [p for p, _ in single]), single)),
           "n_single": len(single),
           "everyday": sum(a == "base" for a in top1(router, tokenizer, data["everyday"])), "n_everyday": len(data["everyday"]),
           "two_skill": both_kept(router, tokenizer, two), "n_two_skill": len(two)}
    for spec in (few, few["second_label"]):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "router"
            shutil.copytree(folder, copy)
            taught = add_label(copy, tokenizer, spec["label"], spec["examples"])
            out[spec["label"]] = sum(a == spec["label"] for a in top1(taught, tokenizer, spec["held_out"]))
            out[f"after_{spec['label']}"] = {
                "single": sum(a == t for a, (_, t) in zip(top1(taught, tokenizer, [p for p, _ in single]), single)),
                "everyday": sum(a == "base" for a in top1(taught, tokenizer, data["everyday"])),
                "two_skill": both_kept(taught, tokenizer, two)}
    return out


def main() -> None:
    from dlp.base_model import load_tokenizer
    from dlp.manifest import load_manifest

    manifest = load_manifest()
    tokenizer = load_tokenizer(manifest.base_sources)
    for folder in sys.argv[1:] or [str(manifest.router_path)]:
        print(json.dumps({"router": folder, **check(Path(folder), tokenizer)}), flush=True)


if __name__ == "__main__":
    main()
