"""A faster output projection for CPU decoding.

Measured on 2 CPU cores of an earlier session's machine (SmolLM2's 49,152 x 576 float32 head):
``h @ W.T`` with ``W.T`` stored contiguously takes 5.2 ms for one row and 15.8 ms for three, against 11.0
and 38.5 ms for ``nn.Linear``'s layout. The head is the largest matmul of a decode step, so this speeds up every
column. It keeps a transposed copy of the (tied) weight: +113 MB. On a Xeon (AMX) ``nn.Linear``'s layout
is the faster one at 2-3 rows, so the layout is chosen per row count by measurement
(:func:`dlp.cpu_kernels.choose`, which sets ``kernels``).
"""

from __future__ import annotations

import torch
from torch import nn


class TransposedHead(nn.Module):
    def __init__(self, head: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = head.in_features, head.out_features
        self.register_buffer("weight_t", head.weight.detach().t().contiguous(), persistent=False)  # (in, vocab)
        self.bias = head.bias
        self._tied = [head.weight]  # the (tied) weight in nn.Linear's layout, kept unregistered: no second copy
        self.kernels = None  # dlp.cpu_kernels.KernelTable: the row counts that use nn.Linear's layout

    def run(self, h: torch.Tensor, linear: bool) -> torch.Tensor:
        if linear:
            return nn.functional.linear(h, self._tied[0], self.bias)
        y = h @ self.weight_t  # (rows, T, vocab)
        return y + self.bias if self.bias is not None else y

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        rows = h.numel() // h.shape[-1]
        return self.run(h, self.kernels is not None and self.kernels.head_linear(rows))


def speed_up_head(model: nn.Module) -> None:
    """Swap the output head for :class:`TransposedHead` (CPU inference only; training keeps nn.Linear)."""
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear) and head.weight.device.type == "cpu":
        model.set_output_embeddings(TransposedHead(head))
