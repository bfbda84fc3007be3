"""The engine: base model, tokenizer, router and adapters, loaded once; every request is stateless.

A request carries its own mixtures (one per batch row) down to the fused layers through a
:class:`~dlp.fusion.FusionPlan`; the engine holds no "active adapter", so concurrent requests are
independent and a bad request leaves the engine as it was.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import selection
from .adapters import AdapterInfo, read_adapter, resolve_folder
from .base_model import LoadedBase, load_base, load_tokenizer
from .errors import DLPError
from .everyday import BASE
from .fusion import add_lora, build_plan, fused_layers, remove_lora, wrap_linear_layers
from .lm_head import speed_up_head
from .generation import GenerationOptions, StreamState, stream_generate
from .manifest import Manifest, load_manifest, name_problem
from .router import MiniMLPRouter, load_router

MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class RouteResult:
    prompt: str
    probs: dict[str, float]  # every loaded adapter, router order
    selected: dict[str, float]  # kept adapters -> fusion weight (sums to 1)
    router_ms: float
    top_p: float
    top_k: int
    mode: str

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "probs": {k: round(v, 6) for k, v in self.probs.items()},
                "selected": {k: round(v, 6) for k, v in self.selected.items()}, "router_ms": round(self.router_ms, 3)}


@dataclass(frozen=True)
class Column:
    key: str  # "base", "single:<name>", "fused" or "manual"
    label: str  # what the UI shows
    mixture: dict[str, float]  # adapter -> weight; empty = base model


@dataclass
class CompareUpdate:
    route: RouteResult | None
    columns: list[Column]
    state: StreamState
    setup_ms: float  # building the fusion plan for the batch

    def column_timing(self, i: int) -> dict:
        t = self.state.timings[i].as_dict()
        router = self.route.router_ms if (self.route and self.columns[i].key != "base") else 0.0
        t.update(router_ms=round(router, 3), setup_ms=round(self.setup_ms, 3),
                 total_ms=round(t["total_ms"] + router + self.setup_ms, 1))
        return t

    def as_dict(self) -> dict:
        return {
            "route": self.route.as_dict() if self.route else None,
            "columns": [{"key": c.key, "label": c.label, "mixture": c.mixture, "text": self.state.texts[i],
                         "timing": self.column_timing(i)} for i, c in enumerate(self.columns)],
            "setup_ms": round(self.setup_ms, 3),
        }


class Routing:
    """Tokenizer + router: all that routing needs (no language model)."""

    def __init__(self, tokenizer, router: MiniMLPRouter | None, names: list[str] | Callable[[], list[str]], defaults):
        self.tokenizer = tokenizer
        self.router = router
        self._names = names  # a list, or the engine's live adapter table (adapters come and go)
        self.defaults = defaults
        if router is not None and router.cfg.vocab_size != len(tokenizer):
            raise DLPError(f"The router was trained for a vocabulary of {router.cfg.vocab_size} tokens, "
                           f"this tokenizer has {len(tokenizer)}", hint="retrain it: python -m dlp train-router")

    @property
    def names(self) -> list[str]:
        """What the router chooses between: ``base`` (no adapter) first, then the loaded adapters."""
        adapters = list(self._names()) if callable(self._names) else list(self._names)
        return [BASE, *[n for n in adapters if n != BASE]]

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "Routing":
        router = load_router(manifest.router_path) if manifest.router_path else None
        return cls(load_tokenizer(manifest.base_sources), router, manifest.names, manifest.defaults)

    def probs(self, prompt: str) -> tuple[torch.Tensor, float]:
        """Probabilities over the loaded adapters; router labels not loaded are dropped, loaded
        adapters the router does not know get 0 (they can still be mixed by hand)."""
        if self.router is None:
            raise DLPError("No router is loaded", hint="train one with: python -m dlp train-router")
        start = time.perf_counter()
        raw = self.router.probs(self.tokenizer, [prompt])[0]  # (n_labels,)
        labels = self.router.cfg.labels
        out = torch.tensor([float(raw[labels.index(n)]) if n in labels else 0.0 for n in self.names])
        if out.sum() <= 0:
            raise DLPError("The router knows none of the loaded adapters", hint="retrain it on these adapters")
        out = out / out.sum()
        return out, (time.perf_counter() - start) * 1000

    def route(self, prompt: str, top_p: float | None = None, top_k: int | None = None,
              mode: str = "renorm") -> RouteResult:
        prompt = check_prompt(prompt)
        top_p = selection.check_top_p(self.defaults.top_p if top_p is None else top_p)
        top_k = selection.check_top_k(self.defaults.top_k if top_k is None else top_k)
        probs, ms = self.probs(prompt)
        selected = selection.select(probs, self.names, top_p, top_k, mode)
        return RouteResult(prompt, dict(zip(self.names, probs.tolist())), selected, ms, top_p, top_k, mode)


MAX_PROMPT_CHARS = 12_000  # refused before tokenizing, so a huge paste costs nothing


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise DLPError("The prompt is empty", hint="type a question, or pick one of the examples")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise DLPError(f"The prompt is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}",
                       hint="shorten it")
    return prompt.strip()


def check_options(options: GenerationOptions) -> GenerationOptions:
    if not isinstance(options.max_new_tokens, int) or not 1 <= options.max_new_tokens <= MAX_NEW_TOKENS:
        raise DLPError(f"max new tokens must be between 1 and {MAX_NEW_TOKENS}, got {options.max_new_tokens}")
    if not 0.0 <= float(options.temperature) <= 2.0:
        raise DLPError(f"temperature must be between 0 and 2, got {options.temperature}", hint="0 means greedy")
    if not isinstance(options.seed, int) or options.seed < 0:
        raise DLPError(f"seed must be a whole number >= 0, got {options.seed}")
    return options


class Engine:
    def __init__(self, manifest: Manifest, base: LoadedBase | None = None, with_router: bool = True):
        started = time.perf_counter()
        self.manifest = manifest
        self.base = base or load_base(manifest.base_sources)
        self.model = self.base.model.eval()
        speed_up_head(self.model)
        self.tokenizer = self.base.tokenizer
        self.device = next(self.model.parameters()).device
        self.adapters: dict[str, AdapterInfo] = {}
        self._lock = threading.Lock()  # guards the adapter table, not requests
        for spec in manifest.adapters:
            self.add_adapter(spec.name, resolve_folder(spec.location, spec.is_hub))
        router = load_router(manifest.router_path) if (with_router and manifest.router_path
                                                        and manifest.router_path.exists()) else None
        self.routing = Routing(self.tokenizer, router, lambda: list(self.adapters), manifest.defaults)
        if router is not None:
            self.routing.probs("warm-up")  # the first call pays one-off allocation; keep it out of visitors' timings
        self.load_seconds = time.perf_counter() - started

    @classmethod
    def from_manifest(cls, path: str | Path | None = None) -> "Engine":
        return cls(load_manifest(path))

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    # --- adapters, added or removed one at a time (Mixture-of-LoRAs) -------------------------------
    def add_adapter(self, name: str, folder: Path) -> AdapterInfo:
        with self._lock:
            if name in self.adapters:
                raise DLPError(f"An adapter named '{name}' is already loaded")
            problem = name_problem(name)
            if problem:
                raise DLPError(f"Adapter name {problem}")
            info, weights = read_adapter(name, folder, self.model)
            layers = wrap_linear_layers(self.model, {k.rsplit(".", 1)[-1] for k in weights})  # idempotent
            add_lora(layers, name, weights)
            self.adapters[name] = info
            return info

    def remove_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self.adapters:
                raise DLPError(f"Unknown adapter '{name}'. Available: {', '.join(self.names) or '(none)'}")
            remove_lora(fused_layers(self.model), name)
            del self.adapters[name]

    # --- requests ------------------------------------------------------------------------------
    def route(self, prompt: str, top_p: float | None = None, top_k: int | None = None,
              mode: str = "renorm") -> RouteResult:
        return self.routing.route(prompt, top_p, top_k, mode)

    def check_mixture(self, mixture: dict[str, float]) -> dict[str, float]:
        """Adapter -> weight; ``base`` is allowed (a zero LoRA: its weight only scales the others down)."""
        for name, w in mixture.items():
            if name not in self.adapters and name != BASE:
                raise DLPError(f"Unknown adapter '{name}'. Available: {', '.join(self.names) or '(none)'}")
            if not isinstance(w, (int, float)) or w < 0 or w != w:
                raise DLPError(f"Weight for '{name}' must be a number >= 0, got {w}")
        return {n: float(w) for n, w in mixture.items() if w > 0}

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat-templated, left-padded ids; refuses (never truncates) prompts over the limit."""
        limit = self.manifest.defaults.max_prompt_tokens
        rows = []
        for p in prompts:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                      add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > limit:
                raise DLPError(f"The prompt is {len(ids)} tokens long; the limit is {limit}",
                               hint="shorten it")
            rows.append(ids)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def columns_for(self, route: RouteResult, n_single: int = 1) -> list[Column]:
        if not isinstance(n_single, int) or not 0 <= n_single <= len(self.names):
            raise DLPError(f"single-adapter columns must be between 0 and {len(self.names)}, got {n_single}")
        ranked = sorted((n for n in route.probs if n != BASE), key=lambda n: -route.probs[n])[:n_single]
        singles = [Column(f"single:{n}", f"{n} only", {n: 1.0}) for n in ranked]
        fused_label = "DLP fused: " + " + ".join(f"{n} {w:.2f}" for n, w in route.selected.items())
        return [Column("base", "Base model", {}), *singles, Column("fused", fused_label, dict(route.selected))]

    def stream(self, prompts: list[str] | str, columns: list[Column], options: GenerationOptions | None = None,
               route: RouteResult | None = None, every: int = 1,
               cancel: threading.Event | None = None) -> Iterator[CompareUpdate]:
        """One batched generate: row i runs ``columns[i].mixture`` on ``prompts[i]`` (or the one prompt)."""
        options = check_options(options or GenerationOptions())
        prompts = [check_prompt(prompts)] * len(columns) if isinstance(prompts, str) else [check_prompt(p) for p in prompts]
        if len(prompts) != len(columns) or not columns:
            raise DLPError("one column per prompt is needed")
        mixtures = [self.check_mixture(c.mixture) for c in columns]
        input_ids, mask = self.encode(prompts)
        start = time.perf_counter()
        plan = build_plan(fused_layers(self.model), mixtures, self.device)
        setup_ms = (time.perf_counter() - start) * 1000
        for state in stream_generate(self.model, self.tokenizer, input_ids, mask, plan, options, every=every,
                                     cancel=cancel):
            if state.error:
                raise DLPError(f"Generation failed: {state.error}")
            yield CompareUpdate(route, columns, state, setup_ms)

    def compare(self, prompt: str, top_p: float | None = None, top_k: int | None = None, n_single: int = 1,
                options: GenerationOptions | None = None, mode: str = "renorm",
                every: int = 1, cancel: threading.Event | None = None) -> Iterator[CompareUpdate]:
        """Route once, then base | top single adapter(s) | fused, streaming together."""
        options = check_options(options or self.default_options())
        route = self.route(prompt, top_p, top_k, mode)
        yield from self.stream(route.prompt, self.columns_for(route, n_single), options, route, every, cancel)

    def generate(self, prompt: str, mode: str = "fused", options: GenerationOptions | None = None,
                 top_p: float | None = None, top_k: int | None = None) -> CompareUpdate:
        """One column: ``base``, ``fused`` (routed) or ``adapter:NAME``; returns the final update."""
        route = None
        if mode == "base":
            column = Column("base", "Base model", {})
        elif mode == "fused":
            route = self.route(prompt, top_p, top_k)
            column = Column("fused", "DLP fused", dict(route.selected))
        elif mode.startswith("adapter:"):
            name = mode.split(":", 1)[1]
            self.check_mixture({name: 1.0})
            column = Column(f"single:{name}", f"{name} only", {name: 1.0})
        else:
            raise DLPError(f"Unknown mode '{mode}'", hint="use base, fused or adapter:NAME")
        last = None
        for last in self.stream(prompt, [column], options or self.default_options(), route, every=10_000):
            pass
        return last

    def default_options(self) -> GenerationOptions:
        d = self.manifest.defaults
        return GenerationOptions(max_new_tokens=d.max_new_tokens, temperature=d.temperature)
