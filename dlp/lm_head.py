"""A faster output projection for CPU decoding.

Measured on 2 CPU cores (SmolLM2's 49,152 x 576 float32 head): ``h @ W.T`` with ``W.T`` stored
contiguously takes 5.2 ms for one row and 15.8 ms for three, against 11.0 and 38.5 ms for
``nn.Linear``'s layout. The head is the largest matmul of a decode step, so this speeds up every
column. It keeps a transposed copy of the (tied) weight: +113 MB.
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

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = h @ self.weight_t  # (rows, T, vocab)
        return y + self.bias if self.bias is not None else y


def speed_up_head(model: nn.Module) -> None:
    """Swap the output head for :class:`TransposedHead` (CPU inference only; training keeps nn.Linear)."""
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear) and head.weight.device.type == "cpu":
        model.set_output_embeddings(TransposedHead(head))
