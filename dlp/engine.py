"""The engine: base model, tokenizer, router and adapters, loaded once; every request is stateless.

A request carries its own mixtures (one per batch row) down to the fused layers through a
:class:`~dlp.fusion.FusionPlan`; the engine holds no "active adapter", so concurrent requests are
independent and a bad request leaves the engine as it was.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from . import compute
from .adapters import AdapterInfo, read_adapter, resolve_folder
from .base_model import LoadedBase, cache_root, load_base
from .errors import DLPError
from .everyday import BASE
from .fusion import FusionPlan, add_lora, build_plan, fused_layers, remove_lora, wrap_linear_layers
from .fusion_methods import LABELS as METHOD_LABELS, check_method, method_mixture
from .learned_fusion import install_gate_hooks, load as load_learned
from .generation import GenerationOptions, StreamState, stream_generate
from .cpu_kernels import choose as choose_kernels
from .lm_head import TransposedHead, speed_up_head
from .manifest import Manifest, load_manifest, name_problem
from .router import load_router
from .routing import MAX_PROMPT_CHARS, RouteResult, Routing, Scope, check_prompt  # noqa: F401 - re-exported
from .session_adapters import SessionAdapters

MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class Column:
    key: str  # "base", "single:<name>", "fused", "fused:<method>" or "manual"
    label: str  # what the UI shows
    mixture: dict[str, float]  # adapter -> weight; empty = base model
    method: str = "renorm"  # how the plan applies the mixture: renorm (static), layerwise or token


@dataclass
class CompareUpdate:
    route: RouteResult | None
    columns: list[Column]
    state: StreamState
    setup_ms: float  # building the fusion plan for the batch
    token_plan: object = None  # dlp.fusion.TokenPlan when a column is token-gated (its trace: the gate's weights)
    rows: list[int] | None = None  # column -> its row in the batch (columns computing the same thing share one)

    def gate_trace(self, i: int) -> tuple[list[str], list[list[float]]]:
        """Column i's token-gate weights, one list per generated token (empty unless column i is gated)."""
        tp, r = self.token_plan, (self.rows or range(len(self.columns)))[i]
        if tp is None or not bool(tp.gated[r]):
            return [], []
        keep = [j for j, n in enumerate(tp.used) if float(tp.prior[r, j]) > float("-inf")]
        steps = [[round(float(t[r, j]), 4) for j in keep] for t in list(tp.trace or [])]
        return [tp.used[j] for j in keep], steps[: len(self.state.token_ids[i])]

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
        compute.run(self._load, manifest, base, with_router)  # on the thread that will decode (dlp.compute)

    def _load(self, manifest: Manifest, base: LoadedBase | None, with_router: bool) -> None:
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
            self.add_adapter(spec.name, resolve_folder(spec.location, spec.is_hub), spec.strength)
        router = load_router(manifest.router_path) if (with_router and manifest.router_path
                                                        and manifest.router_path.exists()) else None
        self.routing = Routing(self.tokenizer, router, lambda: list(self.adapters), manifest.defaults)
        self.visitors = SessionAdapters(self)
        self.learned = load_learned(manifest.fusion_path, self.device)
        install_gate_hooks(self.model)
        head = self.model.get_output_embeddings()
        self.kernels = choose_kernels(list(fused_layers(self.model).values()), cache_root(),
                                      head if isinstance(head, TransposedHead) else None) \
            if self.device.type == "cpu" else None
        if isinstance(head, TransposedHead):
            head.transposed()  # built at start-up, not in a first request (a no-op where the kernels dropped it)
        self.use_cpu_kernels(True)
        if router is not None:
            self.routing.probs("warm-up")  # the first call pays one-off allocation; keep it out of visitors' timings
        self.load_seconds = time.perf_counter() - started

    def use_cpu_kernels(self, on: bool) -> None:
        """Measured CPU kernels (:mod:`dlp.cpu_kernels`) on, or every projection on ``nn.Linear`` (the bench's
        stock path). Set once at start-up and by the bench, never per request."""
        head = self.model.get_output_embeddings()
        for layer in [*fused_layers(self.model).values(), *([head] if isinstance(head, TransposedHead) else [])]:
            layer.kernels = self.kernels if on else None

    @classmethod
    def from_manifest(cls, path: str | Path | None = None) -> "Engine":
        return cls(load_manifest(path))

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    # --- adapters, added or removed one at a time (Mixture-of-LoRAs) -------------------------------
    def add_adapter(self, name: str, folder: Path, strength: float = 1.0) -> AdapterInfo:
        """Load a PEFT LoRA; ``strength`` scales its delta (an adapter that overshoots its task can be
        calibrated in the manifest instead of retrained)."""
        with self._lock:
            if name in self.adapters:
                raise DLPError(f"An adapter named '{name}' is already loaded")
            problem = name_problem(name)
            if problem:
                raise DLPError(f"Adapter name {problem}")
            info = compute.run(self._attach, name, folder, strength)  # between runs, never under one
            self.adapters[name] = info
            return info

    def _attach(self, name: str, folder: Path, strength: float) -> AdapterInfo:
        info, weights = read_adapter(name, folder, self.model)
        if strength != 1.0:
            weights = {k: dataclasses.replace(w, scale=w.scale * strength) for k, w in weights.items()}
            info = dataclasses.replace(info, strength=strength)
        layers = wrap_linear_layers(self.model, {k.rsplit(".", 1)[-1] for k in weights})  # idempotent
        add_lora(layers, name, weights)
        return info

    def remove_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self.adapters:
                raise DLPError(f"Unknown adapter '{name}'. Available: {', '.join(self.names) or '(none)'}")
            compute.run(remove_lora, fused_layers(self.model), name)
            del self.adapters[name]

    # --- requests ------------------------------------------------------------------------------
    def scope(self, session: str | None = None) -> Scope:
        """What a request may use: the shared adapters and router, plus the session's own adapters."""
        return self.visitors.scope(session)

    def route(self, prompt: str, top_p: float | None = None, top_k: int | None = None,
              mode: str = "renorm", scope: Scope | None = None, min_weight: float = 0.0) -> RouteResult:
        return (scope.routing if scope else self.routing).route(prompt, top_p, top_k, mode, min_weight)

    def check_mixture(self, mixture: dict[str, float], scope: Scope | None = None) -> dict[str, float]:
        """Adapter -> weight, returned keyed as the fused layers store the adapters; ``base`` is allowed (a
        zero LoRA: its weight only scales the others down)."""
        keys = scope.keys if scope else {n: n for n in self.adapters}
        for name, w in mixture.items():
            if name not in keys and name != BASE:
                raise DLPError(f"Unknown adapter '{name}'. Available: {', '.join(keys) or '(none)'}")
            if not isinstance(w, (int, float)) or w < 0 or w != w:
                raise DLPError(f"Weight for '{name}' must be a number >= 0, got {w}")
        return {keys.get(n, n): float(w) for n, w in mixture.items() if w > 0}

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

    def fused_column(self, route: RouteResult, fusion: str = "renorm") -> Column:
        """The routed mixture under one fusion method (see :mod:`dlp.fusion_methods`)."""
        check_method(fusion, self.learned.available())
        mixture, method = method_mixture(fusion, route.selected)
        if fusion == "renorm":
            shown = [f"{n} {w:.2f}" for n, w in route.selected.items() if w >= 0.005]
            tail = len(route.selected) - len(shown)  # top-p near 1 keeps tails at 0.00: counted, not listed
            return Column("fused", "DLP fused: " + " + ".join(shown) + (f" (+{tail} under 0.01)" if tail else ""),
                          dict(route.selected))
        kept = [n for n in route.selected if n != BASE]
        what = " + ".join(kept) if kept else "base model"
        if fusion in ("layerwise", "token") and len(kept) < 2:  # nothing to mix: the router's pick, as DLP runs it
            what += " (one kept, as DLP)"
        return Column(f"fused:{fusion}", f"{METHOD_LABELS[fusion]}: {what}", mixture, method)

    def columns_for(self, route: RouteResult, n_single: int = 1, fusion: str = "renorm",
                    singles: list[str] | None = None) -> list[Column]:
        """Base | single adapters | DLP fused, plus the chosen fusion method's column when it is not renorm.

        The single columns are the adapters the router kept (most probable first, at most ``n_single``),
        or the ones a comparer names in ``singles``. A prompt routed to ``base`` alone gets none: a
        runner-up the router rejected is not what the fused answer is compared with, unless asked for."""
        n_adapters = len([n for n in route.probs if n != BASE])
        if not isinstance(n_single, int) or not 0 <= n_single <= n_adapters:
            raise DLPError(f"single-adapter columns must be between 0 and {n_adapters}, got {n_single}")
        if singles:
            unknown = [n for n in singles if n not in route.probs or n == BASE]
            if unknown:
                raise DLPError(f"No adapter called {', '.join(map(repr, unknown))} for a single column",
                               hint="loaded: " + ", ".join(n for n in route.probs if n != BASE))
            names = list(dict.fromkeys(singles))
        else:
            names = [n for n in route.selected if n != BASE][:n_single]
        columns = [Column(f"single:{n}", f"{n} only" if n in route.selected else
                          f"{n} only (p {route.probs[n]:.2f}, not kept)", {n: 1.0}) for n in names]
        fused = [self.fused_column(route)] + ([self.fused_column(route, fusion)] if fusion != "renorm" else [])
        return [Column("base", "Base model", {}), *columns, *fused]

    def stream(self, prompts: list[str] | str, columns: list[Column], options: GenerationOptions | None = None,
               route: RouteResult | None = None, every: int = 1,
               cancel: threading.Event | None = None, scope: Scope | None = None,
               fresh_thread: bool = False) -> Iterator[CompareUpdate]:
        """One batched generate: row i runs ``columns[i].mixture`` on ``prompts[i]`` (or the one prompt);
        ``fresh_thread`` decodes on a new thread, as before :mod:`dlp.compute` (the bench's stock path)."""
        options = check_options(options or GenerationOptions())
        prompts = [check_prompt(prompts)] * len(columns) if isinstance(prompts, str) else [check_prompt(p) for p in prompts]
        if len(prompts) != len(columns) or not columns:
            raise DLPError("one column per prompt is needed")
        mixtures = [self.check_mixture(c.mixture, scope) for c in columns]
        # Columns that would compute the same thing share one batch row: on a one-skill prompt the single, the
        # fused and the learned column are all "that adapter at 1.0", so four columns decode as two rows.
        keys = [(p, tuple(sorted(m.items())), c.method) for p, m, c in zip(prompts, mixtures, columns)]
        unique: dict = {}
        rows = [unique.setdefault(k, len(unique)) for k in keys]  # column -> batch row
        input_ids, mask = self.encode([k[0] for k in unique])
        built: dict = {}

        def prepare() -> FusionPlan:  # runs where the batch decodes, when its turn comes
            start = time.perf_counter()
            plan = build_plan(fused_layers(self.model), [dict(k[1]) for k in unique], self.device,
                              [k[2] for k in unique], self.learned)
            if plan.token is not None:
                plan.token.trace = []  # the gate's weights per generated token, for the page
            built.update(plan=plan, setup_ms=(time.perf_counter() - start) * 1000)
            return plan

        for state in stream_generate(self.model, self.tokenizer, input_ids, mask, prepare, options, every=every,
                                     cancel=cancel, fresh_thread=fresh_thread):
            if state.error:
                raise DLPError(f"Generation failed: {state.error}")
            plan = built.get("plan")
            yield CompareUpdate(route, columns, state.per_column(rows), built.get("setup_ms", 0.0),
                                plan.token if plan else None, rows)

    def compare(self, prompt: str, top_p: float | None = None, top_k: int | None = None, n_single: int = 1,
                options: GenerationOptions | None = None, mode: str = "renorm",
                every: int = 1, cancel: threading.Event | None = None,
                scope: Scope | None = None, fusion: str = "renorm",
                singles: list[str] | None = None, min_weight: float = 0.0) -> Iterator[CompareUpdate]:
        """Route once, then base | single adapter(s) | fused (| fused by ``fusion``), streaming together."""
        options = check_options(options or self.default_options())
        route = self.route(prompt, top_p, top_k, mode, scope, min_weight)
        yield from self.stream(route.prompt, self.columns_for(route, n_single, fusion, singles), options, route,
                               every, cancel, scope)

    def generate(self, prompt: str, mode: str = "fused", options: GenerationOptions | None = None,
                 top_p: float | None = None, top_k: int | None = None, fusion: str = "renorm",
                 min_weight: float = 0.0) -> CompareUpdate:
        """One column: ``base``, ``fused`` (routed, fused by ``fusion``), ``adapter:NAME`` or ``mix:NAME=W,...``
        (a manual mixture, weights as given); returns the final update."""
        route = None
        if mode == "base":
            column = Column("base", "Base model", {})
        elif mode == "fused":
            route = self.route(prompt, top_p, top_k, min_weight=min_weight)
            column = self.fused_column(route, fusion)
        elif mode.startswith("mix:"):
            from .export_mix import parse_mix

            mixture = self.check_mixture(parse_mix(mode.split(":", 1)[1]))
            column = Column("mix", "mix: " + " + ".join(f"{n} {w:g}" for n, w in mixture.items()), mixture)
        elif mode.startswith("adapter:"):
            name = mode.split(":", 1)[1]
            self.check_mixture({name: 1.0})
            column = Column(f"single:{name}", f"{name} only", {name: 1.0})
        else:
            raise DLPError(f"Unknown mode '{mode}'", hint="use base, fused, adapter:NAME or mix:NAME=W,NAME=W")
        last = None
        for last in self.stream(prompt, [column], options or self.default_options(), route, every=10_000):
            pass
        return last

    def default_options(self) -> GenerationOptions:
        d = self.manifest.defaults
        return GenerationOptions(max_new_tokens=d.max_new_tokens, temperature=d.temperature, loop_guard=True)
