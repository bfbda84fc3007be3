"""The decode kernels for the base projections and the output head, chosen per row count by measurement.

Decoding reads every weight once per step whatever the number of rows, so a Compare batch of 3-5 columns
should cost little more than one column. MKL's ``F.linear`` is far from that at 2-8 rows on some CPUs. Three
kernels compete for each row count:

- ``stock``: ``F.linear`` (MKL);
- ``onednn``: oneDNN's prepacked linear (what ``torch.compile`` uses on the CPU). Probes on 2 cores: an AMD
  EPYC (AVX2) ran a 576->1536 projection in 290 / 335 us (1 / 3 rows) against MKL's 466 / 763; an Intel Xeon
  (AMX) was slower with it at every row count;
- ``rows``: :mod:`dlp.row_gemm`, compiled for the machine at hand, which reads each weight once for up to 8 rows.

The choice is measured on the machine at hand, on the model's own projections, per row count, and cached per
CPU, torch version, thread count and model. ``DLP_CPU_KERNEL=stock|onednn|rows`` forces one path; ``auto``
(default) measures.

Only inference in float32 takes these paths; training (autograd) and other dtypes keep ``nn.Linear``.
The packed copy costs the projections' size once more in memory, so it is made only where it wins.

The output head (49,152 x 576 for SmolLM2, the largest matmul of a step) competes the same way among the
transposed copy of :mod:`dlp.lm_head`, ``F.linear`` on the tied weight, and the row kernel; the transposed copy
(+113 MB) is dropped where no row count uses it.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import row_gemm
from .base_model import cache_root

ROWS = (1, 2, 3, 5, 8)  # the row counts measured: 1 column up to a Batch tab's 8 prompts
PROJ = ("stock", "onednn", "rows")  # projection kernels; stock is the default a rival must beat by 3%
HEAD = ("head_t", "head_linear", "head_rows")  # head kernels; head_t (the transposed copy) is the default


@dataclass
class KernelTable:
    """Which kernel each row count uses, and what the measurement saw (ms per pass over every projection)."""

    proj: dict[int, str]  # measured row count -> one of PROJ
    ms: dict[str, dict[str, float]] = field(default_factory=dict)  # kernel -> rows -> ms
    source: str = "measured"  # measured | cached | forced
    head: dict[int, str] = field(default_factory=dict)  # measured row count -> one of HEAD

    def proj_kernel(self, rows: int) -> str:
        kind = self.proj.get(_at(rows), "stock")
        return "stock" if kind == "rows" and rows > row_gemm.MAX_ROWS else kind  # prefill: many rows

    def head_kernel(self, rows: int) -> str:
        kind = self.head.get(_at(rows), "head_t")
        return "head_t" if kind == "head_rows" and rows > row_gemm.MAX_ROWS else kind

    def uses(self, kind: str) -> bool:
        return kind in self.proj.values() or kind in self.head.values()

    def as_dict(self) -> dict:
        return {"proj": {str(r): k for r, k in self.proj.items()}, "head": {str(r): k for r, k in self.head.items()},
                "ms": self.ms, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "KernelTable":
        return cls({int(r): k for r, k in d["proj"].items()}, d.get("ms", {}), source,
                   {int(r): k for r, k in d.get("head", {}).items()})


@functools.lru_cache(maxsize=64)  # called by every projection of every step
def _at(rows: int) -> int:
    """The largest measured row count not above ``rows`` (beyond 8 rows: 8's choice)."""
    return max((r for r in ROWS if r <= rows), default=ROWS[0])


def supported() -> bool:
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise") \
        and hasattr(ops, "_reorder_linear_weight")


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def pack(linears: list[nn.Module]) -> None:
    """Give each module (a :class:`dlp.fusion.FusedLoRALinear` on the CPU, float32) a prepacked copy of its
    base weight."""
    with torch.no_grad():
        for m in linears:
            m.packed = torch.ops.mkldnn._reorder_linear_weight(m.base.weight.detach(), 1)


def project(m: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """A base projection on one kernel of PROJ (``m``: a :class:`dlp.fusion.FusedLoRALinear`)."""
    if kind == "rows":
        return row_gemm.linear(x, m.base.weight, m.base.bias)
    if kind == "onednn" and m.packed is not None:
        return packed_linear(x, m.packed, m.base.bias)
    return nn.functional.linear(x, m.base.weight, m.base.bias)


def _pass_ms(linears: list[nn.Module], xs: dict[int, torch.Tensor], kind: str) -> float:
    t = time.perf_counter()
    for m in linears:
        project(m, xs[m.base.in_features], kind)
    return (time.perf_counter() - t) * 1000


def _head_ms(head: nn.Module, h: torch.Tensor, kind: str) -> float:
    t = time.perf_counter()
    head.run(h, kind)
    return (time.perf_counter() - t) * 1000


def _pick(ms: dict[str, dict[str, float]], kinds: list[str], rows: int) -> str:
    """The fastest kernel at ``rows``; a rival replaces the default (``kinds[0]``) only when >= 3% faster."""
    best = min(kinds, key=lambda k: ms[k][str(rows)])
    return best if ms[best][str(rows)] < 0.97 * ms[kinds[0]][str(rows)] else kinds[0]


def available_kernels(cache: Path | None = None) -> list[str]:
    """The kernels this process can run (``cache``: where the row kernel is built; default the engine's cache)."""
    rows = row_gemm.load(cache if cache is not None else cache_root())
    return ["stock"] + (["onednn"] if supported() else []) + (["rows"] if rows else [])


def measure(linears: list[nn.Module], head: nn.Module | None = None, reps: int = 5,
            kinds: list[str] | None = None) -> KernelTable:
    """Every kernel over every projection (their weights together exceed the caches, as in decoding),
    interleaved, median of ``reps``; each head kernel right after a pass over the projections."""
    kinds = kinds or available_kernels()
    heads = ["head_t", "head_linear"] + (["head_rows"] if "rows" in kinds else []) if head is not None else []
    if "onednn" in kinds and linears[0].packed is None:
        pack(linears)
    ms: dict[str, dict[str, float]] = {k: {} for k in kinds + heads}
    with torch.no_grad():
        for rows in ROWS:
            xs = {n: torch.randn(rows, 1, n) for n in {m.base.in_features for m in linears}}
            h = torch.randn(rows, 1, head.in_features) if head is not None else None
            for k in kinds:
                _pass_ms(linears, xs, k)  # warm-up
            runs = {k: [] for k in kinds + heads}
            for _ in range(reps):
                for k in kinds:
                    runs[k].append(_pass_ms(linears, xs, k))
                for hk in heads:
                    _pass_ms(linears, xs, kinds[0])  # the caches as full of other weights as in a decode step
                    runs[hk].append(_head_ms(head, h, hk))
            for k, v in runs.items():
                ms[k][str(rows)] = round(statistics.median(v), 3)
    return KernelTable({r: _pick(ms, kinds, r) for r in ROWS}, ms,
                       head={r: _pick(ms, heads, r) for r in ROWS} if heads else {})


def cpu_model() -> str:
    """The CPU's model name and whether it has AMX / AVX-512 (kernels differ by machine: say which one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or "unknown"
    name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown")
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    extras = [f for f in ("amx_tile", "avx512f", "avx2") if f in flags]
    return f"{name} ({', '.join(extras) or 'no AVX2'})"


def _key(linears: list[nn.Module], head: nn.Module | None) -> str:
    shapes = sorted({(m.base.in_features, m.base.out_features) for m in linears})
    head_shape = [head.in_features, head.out_features] if head is not None else None
    return json.dumps([2, cpu_model(), torch.__version__, torch.get_num_threads(), len(linears), shapes,
                       head_shape])  # 2: the table's format


def _runs_here(table: KernelTable, kinds: list[str]) -> bool:
    """Whether every kernel a cached table names is available in this process (a compiler may have gone)."""
    return all(k in kinds for k in table.proj.values()) and ("rows" in kinds or not table.uses("head_rows"))


def choose(linears: list[nn.Module], cache: Path | None, head: nn.Module | None = None) -> KernelTable | None:
    """Pick each row count's kernel (forced, cached for this machine, or measured), and keep only the weight
    copies some row count uses. None where the CPU path does not apply (no float32 projection on the CPU, no
    kernel but ``F.linear``, or forced to stock). ``head``: a :class:`dlp.lm_head.TransposedHead`."""
    mode = os.environ.get("DLP_CPU_KERNEL", "auto").strip().lower()
    linears = [m for m in linears if m.base.weight.dtype == torch.float32 and m.base.weight.device.type == "cpu"]
    if mode == "stock" or not linears:
        return None
    kinds = available_kernels(cache)
    if len(kinds) == 1:
        return None
    path = Path(cache) / "cpu_kernels.json" if cache else None
    known = json.loads(path.read_text()) if path and path.is_file() else {}
    key = _key(linears, head)
    if mode in ("onednn", "rows") and mode in kinds:
        table = KernelTable({r: mode for r in ROWS}, source="forced",
                            head={r: "head_rows" for r in ROWS} if mode == "rows" else {})
    elif key in known and _runs_here(cached := KernelTable.from_dict(known[key], "cached"), kinds):
        table = cached
    else:
        table = measure(linears, head, kinds=kinds)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({**known, key: table.as_dict()}, indent=1))
            except OSError:
                pass  # a read-only cache only costs a measurement at the next start
    if not table.uses("onednn"):
        for m in linears:
            m.packed = None  # never used on this machine: no second copy of the weights
    elif linears[0].packed is None:
        pack(linears)
    if head is not None and not table.uses("head_t"):
        head.drop_transposed()
    return table
