"""Base projections on the CPU through oneDNN's prepacked weights, at the row counts where they measure faster.

Decoding reads every weight once per step whatever the number of rows, so a Compare batch of 3-5 columns
should cost little more than one column. MKL's ``F.linear`` is far from that at 2-8 rows on some CPUs;
oneDNN's prepacked linear (what ``torch.compile`` uses on the CPU) is closer, but not on every CPU. Probes
on 2 cores: an AMD EPYC (AVX2) ran a 576->1536 projection in 290 / 335 us (1 / 3 rows) against MKL's
466 / 763; an Intel Xeon (AMX) decoded slower with it at 1-3 rows and faster at 5-8. So the choice is
measured on the machine at hand, on the model's own projections, per row count, and cached per CPU, torch
version, thread count and model. ``DLP_CPU_KERNEL=stock|onednn`` forces one path; ``auto`` (default)
measures.

Only inference in float32 takes the packed path; training (autograd) and other dtypes keep ``nn.Linear``.
The packed copy costs the projections' size once more in memory.

The output head (49,152 x 576 for SmolLM2, the largest matmul of a step) has two layouts in memory anyway
(see :mod:`dlp.lm_head`), so each row count also takes the faster of the two, measured the same way: on
the Xeon, ``F.linear`` on the tied weight took 6.1 / 6.7 ms at 2 / 3 rows against 7.9 / 8.5 for the
transposed copy, and lost at 5 and 8 rows.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROWS = (1, 2, 3, 5, 8)  # the row counts measured: 1 column up to a Batch tab's 8 prompts


@dataclass
class KernelTable:
    """Which kernel each row count uses, and what the measurement saw (ms per pass over every projection)."""

    packed_rows: list[int]  # row counts where the prepacked path was faster
    ms: dict[str, dict[str, float]] = field(default_factory=dict)  # kernel -> rows -> ms
    source: str = "measured"  # measured | cached | forced
    head_linear_rows: list[int] = field(default_factory=list)  # row counts where the head runs F.linear

    def use_packed(self, rows: int) -> bool:
        return _at(rows) in self.packed_rows

    def head_linear(self, rows: int) -> bool:
        return _at(rows) in self.head_linear_rows

    def as_dict(self) -> dict:
        return {"packed_rows": self.packed_rows, "head_linear_rows": self.head_linear_rows, "ms": self.ms,
                "source": self.source}


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


def _pass_ms(linears: list[nn.Module], xs: dict[int, torch.Tensor], packed: bool) -> float:
    t = time.perf_counter()
    for m in linears:
        x = xs[m.base.in_features]
        if packed:
            packed_linear(x, m.packed, m.base.bias)
        else:
            nn.functional.linear(x, m.base.weight, m.base.bias)
    return (time.perf_counter() - t) * 1000


def measure(linears: list[nn.Module], head: nn.Module | None = None, reps: int = 3) -> KernelTable:
    """Both kernels over every projection (their weights together exceed the caches, as in decoding),
    interleaved, median of ``reps``; a row count goes packed when it is at least 3% faster. The head's two
    layouts are timed right after a pass, with the caches as full of other weights as in a decode step."""
    kinds = ["stock", "onednn"] + (["head_t", "head_linear"] if head is not None else [])
    ms: dict[str, dict[str, float]] = {k: {} for k in kinds}
    with torch.no_grad():
        for rows in ROWS:
            xs = {n: torch.randn(rows, 1, n) for n in {m.base.in_features for m in linears}}
            h = torch.randn(rows, 1, head.in_features) if head is not None else None
            _pass_ms(linears, xs, False), _pass_ms(linears, xs, True)  # warm-up
            runs = {k: [] for k in kinds}
            for _ in range(reps):
                runs["stock"].append(_pass_ms(linears, xs, False))
                if head is not None:
                    runs["head_t"].append(_head_ms(head, h, False))
                runs["onednn"].append(_pass_ms(linears, xs, True))
                if head is not None:
                    runs["head_linear"].append(_head_ms(head, h, True))
            for k, v in runs.items():
                ms[k][str(rows)] = round(statistics.median(v), 3)
    won = [r for r in ROWS if ms["onednn"][str(r)] < 0.97 * ms["stock"][str(r)]]
    head_won = [r for r in ROWS if head is not None and ms["head_linear"][str(r)] < 0.97 * ms["head_t"][str(r)]]
    return KernelTable(won, ms, head_linear_rows=head_won)


def _head_ms(head: nn.Module, h: torch.Tensor, linear: bool) -> float:
    t = time.perf_counter()
    head.run(h, linear)
    return (time.perf_counter() - t) * 1000


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
    return json.dumps([cpu_model(), torch.__version__, torch.get_num_threads(), len(linears), shapes, head_shape])


def choose(linears: list[nn.Module], cache: Path | None, head: nn.Module | None = None) -> KernelTable | None:
    """Pick each row count's kernel (forced, cached for this machine, or measured) and give the projections
    their packed weights where some row count uses them. None where the CPU path does not apply (no
    oneDNN, no float32 projection on the CPU, or forced to stock). ``head``: a :class:`dlp.lm_head.
    TransposedHead`, whose layout is chosen per row count too."""
    mode = os.environ.get("DLP_CPU_KERNEL", "auto").strip().lower()
    linears = [m for m in linears if m.base.weight.dtype == torch.float32 and m.base.weight.device.type == "cpu"]
    if mode == "stock" or not linears or not supported():
        return None
    path = Path(cache) / "cpu_kernels.json" if cache else None
    known = json.loads(path.read_text()) if path and path.is_file() else {}
    key = _key(linears, head)
    if mode == "onednn":
        table = KernelTable(list(ROWS), source="forced")
    elif key in known:
        table = KernelTable(known[key]["packed_rows"], known[key]["ms"], "cached",
                            known[key].get("head_linear_rows", []))
    else:
        pack(linears)
        table = measure(linears, head)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({**known, key: table.as_dict()}, indent=1))
            except OSError:
                pass  # a read-only cache only costs a measurement at the next start
    if not table.packed_rows:
        for m in linears:
            m.packed = None  # never used on this machine: no second copy of the weights
    elif linears[0].packed is None:
        pack(linears)
    return table
