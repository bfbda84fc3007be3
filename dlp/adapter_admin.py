"""``add-adapter`` / ``remove-adapter``: bring your own PEFT LoRA, one at a time (Mixture-of-LoRAs).

Adding validates the adapter against the base, writes it into the manifest and teaches the router its
new label from a few example prompts (``dlp/router_extend.py``); removing undoes both. Nothing is
written until every check has passed, so a refused adapter leaves no trace.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import DLPError

MAX_RANK = 256
MAX_BYTES = 200 * 2**20  # a LoRA for a 135M model is a few MB; this refuses full checkpoints
MIN_EXAMPLES = 5
PALETTE = ["#e377c2", "#7f7f7f", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]


def read_examples(path: Path, minimum: int = MIN_EXAMPLES) -> list[str]:
    """``{"prompt": ...}`` per line, at least ``minimum``."""
    path = Path(path)
    if not path.is_file():
        raise DLPError(f"No examples file at {path}", hint='write one {"prompt": "..."} object per line')
    prompts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DLPError(f"{path}, line {i}: not JSON", hint='write one {"prompt": "..."} object per line') from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DLPError(f"{path}, line {i}: needs a non-empty \"prompt\" string")
        prompts.append(row["prompt"].strip())
    return check_examples(prompts, str(path), minimum)


def check_examples(prompts: list[str], source: str = "The examples", minimum: int = MIN_EXAMPLES) -> list[str]:
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if len(prompts) < minimum:
        raise DLPError(f"{source} has {len(prompts)} example prompt(s); the router needs at least {minimum}",
                       hint="add prompts a visitor would type for this adapter")
    return prompts


def check_name(name: str, taken: list[str]) -> str:
    from .manifest import name_problem

    problem = name_problem(name)
    if problem:
        raise DLPError(f"Adapter name {problem}")
    if name in taken:
        raise DLPError(f"An adapter named '{name}' is already loaded", hint="pick another name, or remove that adapter first")
    return name


def check_adapter(name: str, folder: Path, model, max_bytes: int | None = None, max_rank: int | None = None):
    """PEFT LoRA folder, safetensors only, shapes matching the base, rank and size within limits;
    returns ``read_adapter``'s (info, weights)."""
    from .adapters import read_adapter

    max_bytes, max_rank = max_bytes or MAX_BYTES, max_rank or MAX_RANK
    folder = Path(folder)
    weights = folder / "adapter_model.safetensors"
    if weights.is_file() and weights.stat().st_size > max_bytes:
        raise DLPError(f"Adapter '{name}' is {weights.stat().st_size / 2**20:.0f} MB; the limit is "
                       f"{max_bytes / 2**20:.0f} MB", hint="is this a full model rather than a LoRA?")
    info, lora = read_adapter(name, folder, model)
    if info.rank > max_rank:
        raise DLPError(f"Adapter '{name}' has rank {info.rank}; the limit is {max_rank}")
    return info, lora


def add(manifest_path: Path, name: str, location: str, is_hub: bool, examples_file: Path | list[str], task: str = "",
        color: str = "", base=None) -> dict:
    """``examples_file``: a JSONL file, or the prompts themselves; ``base``: an already loaded base model
    (the app's), else it is loaded from the manifest."""
    from .adapters import resolve_folder
    from .base_model import load_base
    from .manifest import load_manifest
    from .router_extend import add_label

    manifest = load_manifest(manifest_path)
    check_name(name, manifest.names)
    from_file = not isinstance(examples_file, list)
    examples = read_examples(examples_file) if from_file else check_examples(examples_file)
    if manifest.router_path is None:
        raise DLPError(f"{manifest.path} has no router.path; the new adapter could never be routed to")
    if not is_hub and not Path(location).is_absolute():
        location = str((manifest.path.parent / location).resolve())  # relative to the manifest, as its paths are
    folder = resolve_folder(location, is_hub)
    base = base or load_base(manifest.base_sources)
    info, _ = check_adapter(name, folder, base.model)
    add_label(manifest.router_path, base.tokenizer, name, examples)
    data = json.loads(manifest.path.read_text(encoding="utf-8"))
    entry = {"name": name, ("hub" if is_hub else "path"): location if is_hub else _relative(folder, manifest.path.parent),
             "task": task or name, "color": color or PALETTE[len(data.get("adapters", [])) % len(PALETTE)],
             "description": task or (f"Added with add-adapter from {Path(examples_file).name}" if from_file
                                     else "Added from the page"),
             "examples": examples[:2]}
    data.setdefault("adapters", []).append(entry)
    manifest.path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"added": name, "rank": info.rank, "targets": list(info.targets), "examples": len(examples),
            "manifest": str(manifest.path), "router": str(manifest.router_path)}


def remove(manifest_path: Path, name: str) -> dict:
    from .manifest import load_manifest
    from .router_extend import remove_label

    manifest = load_manifest(manifest_path)
    manifest.adapter(name)  # a clear error for an unknown name
    if manifest.router_path is not None:
        remove_label(manifest.router_path, name)
    data = json.loads(manifest.path.read_text(encoding="utf-8"))
    data["adapters"] = [a for a in data.get("adapters", []) if a.get("name") != name]
    manifest.path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"removed": name, "manifest": str(manifest.path)}


def _relative(folder: Path, root: Path) -> str:
    try:
        return str(Path(folder).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(Path(folder).resolve())


def keep_for_everyone(engine, name: str, folder: Path, examples: list[str]) -> dict:
    """The page's "keep for everyone" (a local server only): copy the adapter next to the manifest, add it
    as ``add-adapter`` does, then load it and the extended router into the running engine."""
    import shutil

    from .manifest import load_manifest
    from .router import load_router

    manifest = engine.manifest
    check_name(name, [*engine.adapters, *engine.visitors.names_everywhere()])
    dest = manifest.path.parent / "assets" / "adapters" / name
    if dest.exists():
        raise DLPError(f"{dest} already exists", hint="pick another name")
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("*.bin", "*.pt"))
    try:
        result = add(manifest.path, name, str(dest), False, list(examples), base=engine.base)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    engine.add_adapter(name, dest)
    engine.routing.router = load_router(manifest.router_path)
    engine.manifest = load_manifest(manifest.path)
    engine.visitors.forget_replay()
    return result
