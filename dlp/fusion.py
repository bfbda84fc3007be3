"""Per-row LoRA fusion: ``y = W x + sum_i w[row, i] * scale_i * B_i A_i x`` in one batched forward.

Every loaded adapter's A and B live in the wrapped layers for the life of the engine. A request
builds a :class:`FusionPlan` (the mixture of each batch row) and runs its forward inside
``plan.applied()``; the plan travels in a :mod:`contextvars` variable, so it belongs to the calling
thread alone and two requests at once never see each other's weights. Nothing is switched globally.

Per call, the plan concatenates only the adapters some row uses, exactly like PEFT's ``cat``
combination, so a fused pass over two rank-8 adapters costs one rank-16 LoRA, not two passes.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from dataclasses import dataclass

import torch
from torch import nn

_ACTIVE_PLAN: contextvars.ContextVar["FusionPlan | None"] = contextvars.ContextVar("dlp_fusion_plan", default=None)


@dataclass(frozen=True)
class LoRAWeights:
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scale: float  # alpha / r (or alpha / sqrt(r) with rsLoRA)


class FusedLoRALinear(nn.Module):
    """A base ``nn.Linear`` plus every adapter's LoRA pair for this layer, applied per the active plan."""

    def __init__(self, base: nn.Linear, key: str):
        super().__init__()
        self.base = base
        self.key = key  # the module's dotted name, how plans find this layer
        self.loras: dict[str, LoRAWeights] = {}

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # some code reads .weight.dtype / .device from projections
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (rows, T, out)
        plan = _ACTIVE_PLAN.get()
        if plan is None:
            return y
        packed = plan.layers.get(self.key)
        if packed is None:
            return y
        A_cat, B_cat, coef = packed  # (K, in), (out, K), (rows, K) with K = sum of the used ranks
        if coef.shape[0] != x.shape[0]:
            raise RuntimeError(f"fusion plan has {coef.shape[0]} rows but the batch has {x.shape[0]}")
        h = x.to(A_cat.dtype) @ A_cat.T  # (rows, T, K)
        h = h * coef[:, None, :]  # each row's w_i * scale_i on adapter i's r_i columns
        return y + (h @ B_cat.T).to(y.dtype)  # (rows, T, out)


@dataclass
class FusionPlan:
    """The mixtures of one batch, packed per layer; build with :func:`build_plan`."""

    mixtures: list[dict[str, float]]  # per row: adapter name -> weight (empty = base)
    layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    @contextlib.contextmanager
    def applied(self):
        token = _ACTIVE_PLAN.set(self)
        try:
            yield self
        finally:
            _ACTIVE_PLAN.reset(token)


def fused_layers(model: nn.Module) -> dict[str, FusedLoRALinear]:
    return {m.key: m for m in model.modules() if isinstance(m, FusedLoRALinear)}


def wrap_linear_layers(model: nn.Module, suffixes: set[str]) -> dict[str, FusedLoRALinear]:
    """Replace every ``nn.Linear`` whose name ends in one of ``suffixes`` by a FusedLoRALinear (idempotent)."""
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in suffixes and isinstance(module, nn.Linear):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, leaf, FusedLoRALinear(module, name))
    return fused_layers(model)


_LOCK = threading.Lock()  # adapters are added/removed under it; plans snapshot the tensors


def build_plan(layers: dict[str, FusedLoRALinear], mixtures: list[dict[str, float]],
               device: torch.device | None = None) -> FusionPlan:
    """Pack, per layer, the adapters any row uses: A_cat (K, in), B_cat (out, K), coef (rows, K)."""
    used = sorted({n for mix in mixtures for n, w in mix.items() if w != 0.0})
    packed: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    if not used:
        return FusionPlan(mixtures, packed)
    with _LOCK:
        for key, layer in layers.items():
            names = [n for n in used if n in layer.loras]
            if not names:
                continue
            loras = [layer.loras[n] for n in names]
            A_cat = torch.cat([l.A for l in loras], dim=0)  # (K, in)
            B_cat = torch.cat([l.B for l in loras], dim=1)  # (out, K)
            coef = torch.tensor(
                [[mix.get(n, 0.0) * l.scale for n, l in zip(names, loras) for _ in range(l.A.shape[0])]
                 for mix in mixtures],
                dtype=A_cat.dtype,
            )  # (rows, K)
            packed[key] = (A_cat, B_cat, coef.to(device or A_cat.device))
    return FusionPlan(mixtures, packed)


def add_lora(layers: dict[str, FusedLoRALinear], adapter: str, weights: dict[str, LoRAWeights]) -> None:
    with _LOCK:
        for key, w in weights.items():
            layers[key].loras[adapter] = w


def remove_lora(layers: dict[str, FusedLoRALinear], adapter: str) -> None:
    with _LOCK:
        for layer in layers.values():
            layer.loras.pop(adapter, None)
