"""The fusion methods a visitor can pick, and the per-row mixture each one starts from.

- ``renorm``: DLP-LoRA's weights (the router's kept probabilities, renormalized) for the whole answer.
- ``sum``: every kept adapter at weight 1 (LoRA arithmetic, no data needed; ``base`` drops out).
- ``layerwise``: every kept adapter at a learned weight per layer (CAT); the answer's cost is DLP's.
- ``token``: the router's weights, re-weighed at every token by a learned gate per layer (LoRA-Flow).

With one adapter kept, the learned methods are that adapter at DLP's weight: they were trained to
combine two skills, and a one-skill prompt stays exactly what the router picked.
"""

from __future__ import annotations

from .errors import DLPError
from .manifest import RESERVED as BASE

METHODS = ("renorm", "sum", "layerwise", "token")
LABELS = {"renorm": "DLP renorm", "sum": "sum", "layerwise": "layer-wise (learned)", "token": "token gate (learned)"}


def check_method(method: str, available: list[str] | None = None) -> str:
    if method not in METHODS:
        raise DLPError(f"Unknown fusion method '{method}'. Available: {', '.join(METHODS)}")
    if method in ("layerwise", "token") and available is not None and method not in available:
        raise DLPError(f"The '{method}' fusion has not been trained for this stack",
                       hint="train it with: python -m dlp train-fusion --method " + method)
    return method


def method_mixture(method: str, selected: dict[str, float]) -> tuple[dict[str, float], str]:
    """(mixture, plan method) for one row: what :func:`dlp.fusion.build_plan` gets for ``method``."""
    adapters = {n: w for n, w in selected.items() if n != BASE}
    if method == "sum":
        return {n: 1.0 for n in adapters}, "renorm"
    if method in ("layerwise", "token") and len(adapters) < 2:
        return dict(selected), "renorm"
    if method == "layerwise":
        return {n: 1.0 for n in adapters}, "layerwise"
    return dict(selected), method
