"""Which adapters to fuse, and with what weights, from the router's probability vector.

Pure functions on a 1-D probability tensor; no model, no I/O.

Weighting modes:
- ``"renorm"`` (default, the paper's text): the kept probabilities divided by their sum.
- ``"softmax"`` (the original DLP-LoRA repository's code): a softmax over the kept
  probabilities. Probabilities lie in [0, 1], so this flattens the weights towards uniform:
  0.8/0.2 becomes 0.65/0.35.
- ``"max"``: the kept probabilities divided by the largest, so each kept adapter keeps more of its
  strength (0.5/0.45 becomes 1.0/0.9; the weights no longer sum to 1). Measured on the two-skill
  evaluation, where it did not beat renorm, so only the evaluation uses it (not the CLI or the page).
"""

from __future__ import annotations

import torch

from .errors import DLPError

MODES = ("renorm", "softmax", "max")


def check_top_p(p: float) -> float:
    if not isinstance(p, (int, float)) or not 0.0 < float(p) <= 1.0:
        raise DLPError(f"top-p must be in (0, 1], got {p}", hint="try 0.9")
    return float(p)


def check_top_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise DLPError(f"top-k must be a whole number >= 1 (or 0 for no cap), got {k}")
    return k


def kept_indices(probs: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> list[int]:
    """Smallest prefix of the sorted probabilities whose sum reaches ``top_p`` (at least one),
    then at most ``top_k`` of them when ``top_k`` > 0. Ties keep the lower index first."""
    check_top_p(top_p)
    check_top_k(top_k)
    if probs.dim() != 1 or probs.numel() == 0:
        raise DLPError("the router returned no probabilities (no adapters loaded?)")
    order = sorted(range(probs.numel()), key=lambda i: (-float(probs[i]), i))
    kept, total = [], 0.0
    for i in order:
        kept.append(i)
        total += float(probs[i])
        if total >= top_p - 1e-6:  # 1e-6: float sums of a softmax can fall just short of 1.0
            break
    if top_k:
        kept = kept[:top_k]
    return kept


def fusion_weights(probs: torch.Tensor, kept: list[int], mode: str = "renorm") -> dict[int, float]:
    """Weights over the kept indices: they sum to 1 for renorm and softmax; max scales the top one to 1."""
    if mode not in MODES:
        raise DLPError(f"Unknown weighting mode '{mode}'. Available: {', '.join(MODES)}")
    values = probs[kept].double()
    if mode == "softmax":
        weights = torch.softmax(values, dim=0)
    elif mode == "max":
        weights = values / values.max().clamp_min(1e-12)
    else:
        weights = values / values.sum().clamp_min(1e-12)
    return {i: float(w) for i, w in zip(kept, weights)}


def check_min_weight(w: float) -> float:
    if not isinstance(w, (int, float)) or not 0.0 <= float(w) < 1.0:
        raise DLPError(f"the minimum fusion weight must be in [0, 1), got {w}", hint="try 0.1, or 0 for plain top-p")
    return float(w)


def select(probs: torch.Tensor, names: list[str], top_p: float = 1.0, top_k: int = 0,
           mode: str = "renorm", min_weight: float = 0.0) -> dict[str, float]:
    """Name -> fusion weight for the kept adapters, in descending probability order.

    ``min_weight`` > 0 departs from the paper's plain top-p: a kept adapter whose weight falls under it
    is dropped and the rest are re-weighted (the most probable one always stays), so a tail at 0.03
    does not join the mixture."""
    kept = kept_indices(probs, top_p, top_k)
    weights = fusion_weights(probs, kept, mode)
    if check_min_weight(min_weight) > 0:
        kept = [i for i in kept if weights[i] >= min_weight] or kept[:1]
        weights = fusion_weights(probs, kept, mode)
    return {names[i]: w for i, w in weights.items()}
