"""The output head for CPU decoding, with a second layout of its weight.

Measured on 2 CPU cores of an earlier session's machine (SmolLM2's 49,152 x 576 float32 head):
``h @ W.T`` with ``W.T`` stored contiguously takes 5.2 ms for one row and 15.8 ms for three, against 11.0
and 38.5 ms for ``nn.Linear``'s layout. The head is the largest matmul of a decode step. The transposed copy
costs +113 MB and ~0.15 s to build, so it is built only when needed: :func:`dlp.cpu_kernels.choose` measures
it against ``F.linear`` on the tied weight and against :mod:`dlp.row_gemm` per row count, sets ``kernels``,
and drops the copy where nothing uses it (a start-up that reads a cached choice never builds it there)."""

from __future__ import annotations

import torch
from torch import nn

from . import row_gemm


class TransposedHead(nn.Module):
    def __init__(self, head: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = head.in_features, head.out_features
        self.register_buffer("weight_t", None, persistent=False)  # (in, vocab), built by transposed()
        self.bias = head.bias
        self._tied = [head.weight]  # the (tied) weight in nn.Linear's layout, kept unregistered: no second copy
        self._dropped = False  # no row count uses the copy: never build it
        self.kernels = None  # dlp.cpu_kernels.KernelTable: each row count's head kernel

    def transposed(self) -> torch.Tensor | None:
        """The contiguous (in, vocab) copy, built on first use; None once dropped."""
        if self.weight_t is None and not self._dropped:
            self.weight_t = self._tied[0].detach().t().contiguous()
        return self.weight_t

    def run(self, h: torch.Tensor, kind: str = "head_t") -> torch.Tensor:
        """``kind``: one of :data:`dlp.cpu_kernels.HEAD` (the transposed copy, F.linear, or the row kernel)."""
        if kind == "head_rows":
            return row_gemm.linear(h, self._tied[0], self.bias)
        weight_t = None if kind == "head_linear" else self.transposed()
        if weight_t is None:
            return nn.functional.linear(h, self._tied[0], self.bias)
        y = h @ weight_t  # (rows, T, vocab)
        return y + self.bias if self.bias is not None else y

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kernels is None or torch.is_grad_enabled() or h.dtype != torch.float32:
            return self.run(h)
        return self.run(h, self.kernels.head_kernel(h.numel() // h.shape[-1]))

    def drop_transposed(self) -> None:
        """Free the transposed copy where no row count uses it (F.linear then runs wherever it would)."""
        self.weight_t, self._dropped = None, True


def speed_up_head(model: nn.Module) -> None:
    """Swap the output head for :class:`TransposedHead` (CPU inference only; training keeps nn.Linear)."""
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear) and head.weight.device.type == "cpu":
        model.set_output_embeddings(TransposedHead(head))
