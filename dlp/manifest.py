"""``adapters_manifest.json``: what the demo loads, validated once with errors naming field and file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .base_model import BaseSource
from .errors import DLPError

DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "adapters_manifest.json"
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")
RESERVED = "base"  # the router's "no adapter" label


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an adapter, or None: one rule for the manifest, the engine and add-adapter."""
    if name == RESERVED:
        return f"'{RESERVED}' is reserved for the base model (no adapter); pick another name"
    if not isinstance(name, str) or not _NAME.match(name):
        return f"'{name}' must be 1-40 letters, digits, '_' or '-'"
    return None


@dataclass(frozen=True)
class AdapterSpec:
    name: str  # unique id, used in the CLI and the UI
    location: str  # a local folder (resolved against the manifest) or a hub id
    is_hub: bool  # True when ``location`` is a hub id
    task: str  # short task label
    description: str  # one line for the Adapters tab
    color: str  # "#rrggbb", the adapter's colour in every chart
    examples: tuple[str, ...] = ()  # prompts offered in the UI
    strength: float = 1.0  # the share of the trained delta a weight of 1 applies (alpha / r x strength)
    expected: tuple[str, ...] = ()  # per example: text the adapter's right answer contains ("" = unchecked)
    examples_file: Path | None = None  # a JSONL file of {"prompt": ...}: what init-router teaches the router


@dataclass(frozen=True)
class Defaults:
    top_p: float = 0.9  # cumulative probability the kept adapters must reach
    top_k: int = 0  # 0 = no top-k cap
    max_new_tokens: int = 128  # reply length per column
    temperature: float = 0.0  # 0 = greedy
    max_prompt_tokens: int = 1024  # longer prompts are refused, not truncated


@dataclass(frozen=True)
class Manifest:
    path: Path
    base_name: str
    base_sources: list[BaseSource]
    adapters: tuple[AdapterSpec, ...]
    router_path: Path | None
    defaults: Defaults = field(default_factory=Defaults)
    mixed_examples: tuple[str, ...] = ()  # prompts that mix two tasks, for the UI
    fusion_path: Path | None = None  # learned fusion weights (layer-wise, token gate), when trained

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.adapters]

    def adapter(self, name: str) -> AdapterSpec:
        for spec in self.adapters:
            if spec.name == name:
                return spec
        raise DLPError(f"Unknown adapter '{name}'. Available: {', '.join(self.names) or '(none)'}")


class _Reader:
    """Typed field access that names the file and the JSON path in every error."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str) -> DLPError:
        return DLPError(f"{self.path}: field '{where}' {what}", hint="fix the manifest and restart")

    def get(self, obj: dict, key: str, where: str, kind: type | tuple, default=...):
        if not isinstance(obj, dict):
            raise self.fail(where, "must be an object")
        if key not in obj:
            if default is ...:
                raise self.fail(f"{where}.{key}" if where else key, "is missing")
            return default
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(f"{where}.{key}" if where else key, f"must be {name}, got {type(value).__name__}")
        return value


def parse_manifest(data: dict, path: Path) -> Manifest:
    r = _Reader(path)
    root = path.parent
    if not isinstance(data, dict):
        raise r.fail("(top level)", "must be a JSON object")
    base = r.get(data, "base", "", dict)
    sources = []
    for i, src in enumerate(r.get(base, "sources", "base", list)):
        where = f"base.sources[{i}]"
        kind = r.get(src, "kind", where, str)
        if kind not in ("gguf_package", "path", "hub"):
            raise r.fail(f"{where}.kind", f"is '{kind}'; use gguf_package, path or hub")
        value = r.get(src, "value", where, str)
        if kind == "path":
            value = str((root / value).resolve())
        sources.append(BaseSource(kind, value, r.get(src, "file", where, str, "")))
    if not sources:
        raise r.fail("base.sources", "is empty; list at least one source")

    adapters, seen = [], set()
    for i, a in enumerate(r.get(data, "adapters", "", list)):
        where = f"adapters[{i}]"
        name = r.get(a, "name", where, str)
        problem = name_problem(name)
        if problem:
            raise r.fail(f"{where}.name", problem)
        if name in seen:
            raise r.fail(f"{where}.name", f"'{name}' is used twice")
        seen.add(name)
        if ("path" in a) == ("hub" in a):
            raise r.fail(where, "needs exactly one of 'path' (a folder) or 'hub' (a hub id)")
        is_hub = "hub" in a
        loc = r.get(a, "hub", where, str) if is_hub else str((root / r.get(a, "path", where, str)).resolve())
        color = r.get(a, "color", where, str, "#888888")
        if not _COLOR.match(color):
            raise r.fail(f"{where}.color", f"'{color}' must look like #1f77b4")
        examples, expected = [], []
        for e in r.get(a, "examples", where, list, []):  # "a prompt" or {"prompt": ..., "expected": ...}
            e = e if isinstance(e, dict) else {"prompt": e}
            if not (isinstance(e.get("prompt"), str) and e["prompt"].strip()
                    and isinstance(e.get("expected", ""), str)):
                raise r.fail(f"{where}.examples", 'must be prompts, or {"prompt": "...", "expected": "..."} with '
                             "the text a right answer contains")
            examples.append(e["prompt"])
            expected.append(e.get("expected", ""))
        strength = float(r.get(a, "strength", where, (int, float), 1.0))
        if not 0 < strength <= 2:
            raise r.fail(f"{where}.strength", f"is {strength}; it must be in (0, 2]")
        examples_file = r.get(a, "examples_file", where, str, "")
        adapters.append(AdapterSpec(name, loc, is_hub, r.get(a, "task", where, str, name),
                                    r.get(a, "description", where, str, ""), color, tuple(examples), strength,
                                    tuple(expected), (root / examples_file).resolve() if examples_file else None))

    router = r.get(data, "router", "", dict, {})
    router_path = r.get(router, "path", "router", str, "")
    d = r.get(data, "defaults", "", dict, {})
    defaults = Defaults(
        top_p=float(r.get(d, "top_p", "defaults", (int, float), 0.9)),
        top_k=r.get(d, "top_k", "defaults", int, 0),
        max_new_tokens=r.get(d, "max_new_tokens", "defaults", int, 128),
        temperature=float(r.get(d, "temperature", "defaults", (int, float), 0.0)),
        max_prompt_tokens=r.get(d, "max_prompt_tokens", "defaults", int, 1024),
    )
    if not 0 < defaults.top_p <= 1:
        raise r.fail("defaults.top_p", f"is {defaults.top_p}; it must be in (0, 1]")
    if not 1 <= defaults.max_new_tokens <= 2048:
        raise r.fail("defaults.max_new_tokens", "must be between 1 and 2048")
    if defaults.temperature < 0:
        raise r.fail("defaults.temperature", "must be >= 0")
    mixed = r.get(data, "mixed_examples", "", list, [])
    fusion_path = r.get(r.get(data, "fusion", "", dict, {}), "path", "fusion", str, "")
    return Manifest(path, r.get(base, "name", "base", str, "base model"), sources, tuple(adapters),
                    (root / router_path).resolve() if router_path else None, defaults, tuple(mixed),
                    (root / fusion_path).resolve() if fusion_path else None)


def load_manifest(path: str | Path | None = None) -> Manifest:
    path = Path(path) if path else DEFAULT_MANIFEST
    if not path.is_file():
        raise DLPError(f"Manifest not found: {path}", hint="pass --manifest PATH")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DLPError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return parse_manifest(data, path)
