"""Per-row LoRA fusion: ``y = W x + sum_i w[row, i] * scale_i * B_i A_i x`` in one batched forward.

Every loaded adapter's A and B live in the wrapped layers for the life of the engine. A request
builds a :class:`FusionPlan` (the mixture of each batch row) and runs its forward inside
``plan.applied()``; the plan travels in a :mod:`contextvars` variable, so it belongs to the calling
thread alone and two requests at once never see each other's weights. Nothing is switched globally.

Per call, the plan concatenates only the adapters some row uses, exactly like PEFT's ``cat``
combination, so a fused pass over two rank-8 adapters costs one rank-16 LoRA, not two passes.

A row's coefficients can also depend on the layer (``layerwise``: one learned weight per layer and
adapter) or on the token (``token``: a learned gate per layer reads the hidden state entering the
layer and mixes the row's adapters at every position); see :mod:`dlp.learned_fusion`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from . import row_gemm
from .cpu_kernels import project
from .manifest import RESERVED as BASE

CAT_CACHE = 4  # adapter sets whose concatenation each layer keeps (~70 MB at most for the shipped seven)
_LAYERS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()  # see fused_layers
_ACTIVE_PLAN: contextvars.ContextVar["FusionPlan | None"] = contextvars.ContextVar("dlp_fusion_plan", default=None)


@dataclass(frozen=True)
class LoRAWeights:
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r), held as the transpose of a contiguous (r, out) tensor
    scale: float  # alpha / r (or alpha / sqrt(r) with rsLoRA)

    def __post_init__(self):
        # A decode step adds h @ B.T: with B.T contiguous the row kernel adds it along the outputs in vector
        # lanes, and MKL's product is ~3x faster for a few rows (4 vs 15 us per projection on an AMD EPYC).
        if not self.B.T.is_contiguous():
            object.__setattr__(self, "B", self.B.T.contiguous().T)  # frozen dataclass: set once, here


class FusedLoRALinear(nn.Module):
    """A base ``nn.Linear`` plus every adapter's LoRA pair for this layer, applied per the active plan."""

    def __init__(self, base: nn.Linear, key: str):
        super().__init__()
        self.base = base
        self.key = key  # the module's dotted name, how plans find this layer
        self.loras: dict[str, LoRAWeights] = {}
        self._cats: dict[tuple, tuple] = {}  # the last few adapter sets' concatenations (see concatenated)
        self.packed: torch.Tensor | None = None  # oneDNN's prepacked base weight (dlp.cpu_kernels), CPU only
        self.kernels = None  # dlp.cpu_kernels.KernelTable: each row count's kernel; None = nn.Linear

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # some code reads .weight.dtype / .device from projections
        return self.base.weight

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels is not None and x.dtype == torch.float32 and not torch.is_grad_enabled():
            return project(self, x, self.kernels.proj_kernel(x.numel() // x.shape[-1]))
        return self.base(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = _ACTIVE_PLAN.get()
        packed = plan.layers.get(self.key) if plan is not None else None
        if packed is None:
            return self._base(x)
        A_cat, B_cat, coef = packed  # (K, in), (out, K), (rows, K) with K = sum of the used ranks
        if coef.shape[0] != x.shape[0]:
            raise RuntimeError(f"fusion plan has {coef.shape[0]} rows but the batch has {x.shape[0]}")
        per_token = plan.token_coef(self.key, coef)  # (rows, T, K) where a token gate runs, else None
        mix = coef[:, None, :] if per_token is None else per_token  # w_i * scale_i on adapter i's columns
        if self._rows_with_lora(x, A_cat):  # a decode step on the row kernel: base and LoRA in one call
            one_step = per_token is None and x.shape[1] == 1  # decoding: coef is the mix itself, no copy (~12 us)
            return row_gemm.linear_lora(x, self.base.weight, self.base.bias, A_cat, B_cat,
                                        coef if one_step else mix.expand(x.shape[0], x.shape[1], -1))
        y = self._base(x)
        h = x.to(A_cat.dtype) @ A_cat.T  # (rows, T, K)
        return y + ((h * mix) @ B_cat.T).to(y.dtype)  # (rows, T, out)

    def concatenated(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """A_cat (K, in) and B_cat (out, K) of several adapters, kept for the last CAT_CACHE sets: a request's
        plan concatenates at every projection (420 ``torch.cat``, ~14 us each on an AMD EPYC), and requests
        that keep the same adapters reuse them. Keyed by the tensors themselves, which the entry holds, so a
        replaced adapter can never be served from a stale entry."""
        loras = [self.loras[n] for n in names]
        key = tuple((n, id(l.A), id(l.B)) for n, l in zip(names, loras))
        hit = self._cats.pop(key, None)  # build_plan calls this under _LOCK
        if hit is None:
            hit = (torch.cat([l.A for l in loras]), torch.cat([l.B.T for l in loras]).T, loras)
        self._cats[key] = hit  # newest last
        while len(self._cats) > CAT_CACHE:
            del self._cats[next(iter(self._cats))]
        return hit[0], hit[1]

    def drop_concatenations(self) -> None:
        """Forget the kept concatenations (an adapter was removed, or a measurement needs a cold start)."""
        self._cats.clear()

    def _rows_with_lora(self, x: torch.Tensor, A_cat: torch.Tensor) -> bool:
        """Where the kernel table put this row count on the row kernel, the LoRA delta rides in the same call
        (on an AMD EPYC the delta's four small torch ops cost ~50 us per projection, 210 per token)."""
        if self.kernels is None or torch.is_grad_enabled() or x.dtype != torch.float32 or A_cat.dtype != x.dtype:
            return False
        rows = x.numel() // x.shape[-1]
        return self.kernels.proj_kernel(rows) == "rows" and A_cat.shape[0] <= row_gemm.MAX_LORA_RANK


def layer_index(key: str) -> int | None:
    """``model.layers.12.self_attn.q_proj`` -> 12 (the decoder layer a projection belongs to)."""
    parts = key.split(".")
    for a, b in zip(parts, parts[1:]):
        if a in ("layers", "h", "blocks") and b.isdigit():
            return int(b)
    return None


@dataclass
class FusionPlan:
    """The mixtures of one batch, packed per layer; build with :func:`build_plan`."""

    mixtures: list[dict[str, float]]  # per row: adapter name -> weight (empty = base)
    layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    token: "TokenPlan | None" = None  # the token gate's part, when some row is gated per token

    def token_coef(self, key: str, coef: torch.Tensor) -> torch.Tensor | None:
        return self.token.coef(key, coef) if self.token is not None else None

    @contextlib.contextmanager
    def applied(self):
        token = _ACTIVE_PLAN.set(self)
        try:
            yield self
        finally:
            _ACTIVE_PLAN.reset(token)


def fused_layers(model: nn.Module) -> dict[str, FusedLoRALinear]:
    """The model's wrapped layers by key. Kept per model (walking its ~500 modules took ~3 ms of every request's
    set-up) and renewed by :func:`wrap_linear_layers`, the only code that swaps them in."""
    layers = _LAYERS.get(model)
    if layers is None:
        layers = _LAYERS[model] = {m.key: m for m in model.modules() if isinstance(m, FusedLoRALinear)}
    return dict(layers)


def wrap_linear_layers(model: nn.Module, suffixes: set[str]) -> dict[str, FusedLoRALinear]:
    """Replace every ``nn.Linear`` whose name ends in one of ``suffixes`` by a FusedLoRALinear (idempotent)."""
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in suffixes and isinstance(module, nn.Linear):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, leaf, FusedLoRALinear(module, name))
    _LAYERS.pop(model, None)
    return fused_layers(model)


_LOCK = threading.Lock()  # adapters are added/removed under it; plans snapshot the tensors


@dataclass
class TokenPlan:
    """Per-token coefficients: the decoder layers' pre-hooks put each layer's gate weights (rows, T, n_used)
    in ``weights``; a projection turns them into its columns' coefficients with ``spread[key]`` (n_used, K)."""

    gate: nn.Module  # dlp.learned_fusion.TokenGate
    used: list[str]  # the plan's adapter names, the gate's output order
    prior: torch.Tensor  # (rows, n_used): log of each row's weights (-inf where a row does not use one)
    gated: torch.Tensor  # (rows,) bool: rows the gate mixes; the others keep their static coefficients
    spread: dict[str, tuple[int | None, torch.Tensor]]  # key -> (its decoder layer, (n_used, K) scales)
    weights: dict[int, torch.Tensor]  # layer -> (rows, T, n_used), written during the forward
    trace: list[torch.Tensor] | None = None  # per step: the layers' mean weights at the last position

    def coef(self, key: str, coef: torch.Tensor) -> torch.Tensor | None:
        layer, spread = self.spread[key]  # the key's layer parsed once per plan, not per projection call
        g = self.weights.get(layer)
        if g is None:
            return None
        per_token = g.to(coef.dtype) @ spread  # (rows, T, K)
        return torch.where(self.gated[:, None, None], per_token, coef[:, None, :])


def build_plan(layers: dict[str, FusedLoRALinear], mixtures: list[dict[str, float]],
               device: torch.device | None = None, methods: list[str] | None = None,
               learned=None) -> FusionPlan:
    """Pack, per layer, the adapters any row uses: A_cat (K, in), B_cat (out, K), coef (rows, K).

    ``methods`` (per row, default all ``renorm``) and ``learned`` (a :class:`dlp.learned_fusion.Learned`)
    add the learned methods: a ``layerwise`` row's coefficients are multiplied by the layer's learned
    weights, a ``token`` row's are set per token by the gate. Both stay differentiable (training)."""
    used = sorted({n for mix in mixtures for n, w in mix.items() if w != 0.0})
    packed: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    if not used:
        return FusionPlan(mixtures, packed)
    methods = methods or ["renorm"] * len(mixtures)
    layerwise = [m == "layerwise" for m in methods]
    gated = [m == "token" for m in methods]
    gate = learned.token if learned is not None else None
    with_base = any(gated) and gate is not None and gate.with_base and BASE not in used
    gate_names = used + [BASE] * with_base  # the gate's options; "base" has no LoRA: weight on it shrinks the rest
    spread: dict[str, torch.Tensor] = {}
    coefs: dict[tuple, torch.Tensor] = {}  # layers with the same adapters, ranks and scales share one (rows, K)
    with _LOCK:
        for key, layer in layers.items():
            names = [n for n in used if n in layer.loras]
            if not names:
                continue
            loras = [layer.loras[n] for n in names]
            one = len(loras) == 1  # nothing to concatenate: the adapter's own tensors, no copy
            A_cat, B_cat = (loras[0].A, loras[0].B) if one else layer.concatenated(names)  # (K, in), (out, K)
            ranks = [l.A.shape[0] for l in loras]
            sig = (tuple(names), tuple(ranks), tuple(l.scale for l in loras), A_cat.dtype)
            if sig not in coefs:
                coefs[sig] = torch.tensor(
                    [[mix.get(n, 0.0) * l.scale for n, l in zip(names, loras) for _ in range(l.A.shape[0])]
                     for mix in mixtures],
                    dtype=A_cat.dtype,
                ).to(device or A_cat.device)  # (rows, K)
            coef = coefs[sig]
            if any(layerwise) and learned is not None and learned.layerwise is not None:
                per_column = learned.layerwise.weights(layer_index(key), names).repeat_interleave(
                    torch.tensor(ranks, device=coef.device)).to(coef)
                rows = torch.tensor(layerwise, device=coef.device)[:, None]
                coef = torch.where(rows, coef * per_column[None, :], coef)
            if any(gated):
                s = torch.zeros(len(gate_names), sum(ranks), dtype=A_cat.dtype)
                col = 0
                for n, l, r in zip(names, loras, ranks):
                    s[gate_names.index(n), col : col + r] = l.scale
                    col += r
                spread[key] = (layer_index(key), s.to(coef.device))
            packed[key] = (A_cat, B_cat, coef)
    token = None
    if any(gated):
        if gate is None:
            raise ValueError("a token-gated row needs a trained token gate")
        dev = device or next(iter(packed.values()))[0].device
        prior = torch.tensor([[mix.get(n, 1.0 if with_base and n == BASE else 0.0) for n in gate_names]
                              for mix in mixtures], dtype=torch.float32)
        prior = torch.where(prior > 0, gate.prior_strength * prior.clamp_min(1e-30).log(),
                            torch.full_like(prior, float("-inf")))
        prior[~torch.tensor(gated)] = 0.0  # ungated rows: never read, but no all -inf row (NaN)
        token = TokenPlan(gate, gate_names, prior.to(dev), torch.tensor(gated, device=dev), spread, {})
    return FusionPlan(mixtures, packed, token)


def add_lora(layers: dict[str, FusedLoRALinear], adapter: str, weights: dict[str, LoRAWeights]) -> None:
    with _LOCK:
        for key, w in weights.items():
            layers[key].loras[adapter] = w


def remove_lora(layers: dict[str, FusedLoRALinear], adapter: str) -> None:
    with _LOCK:
        for layer in layers.values():
            layer.loras.pop(adapter, None)
            layer.drop_concatenations()  # entries holding the removed adapter's tensors
