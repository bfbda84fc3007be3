"""Routing a prompt: the router's probabilities over what a request may use, and the top-p selection.

A :class:`Scope` is what one request sees: the adapters it may mix (by the names it shows, each mapped to
the key its LoRA pair is stored under in the fused layers) and the routing over them. Every visitor shares
the engine's scope, except one who added adapters of their own; that visitor's scope adds them and routes
with a private copy of the router (``dlp/session_adapters.py``), so nobody else's routing changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import compute, selection
from .base_model import load_tokenizer
from .errors import DLPError
from .everyday import BASE
from .manifest import Manifest
from .router import MiniMLPRouter, load_router


@dataclass(frozen=True)
class RouteResult:
    prompt: str
    probs: dict[str, float]  # every loaded adapter, router order
    selected: dict[str, float]  # kept adapters -> fusion weight (sums to 1)
    router_ms: float
    top_p: float
    top_k: int
    mode: str
    min_weight: float = 0.0  # kept adapters under this weight were dropped (0: the paper's plain top-p)
    dropped: tuple[str, ...] = ()  # the adapters top-p kept that the minimum weight dropped

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "probs": {k: round(v, 6) for k, v in self.probs.items()},
                "selected": {k: round(v, 6) for k, v in self.selected.items()}, "router_ms": round(self.router_ms, 3),
                "top_p": self.top_p, "top_k": self.top_k, "mode": self.mode, "min_weight": self.min_weight,
                "dropped": list(self.dropped)}


class Routing:
    """Tokenizer + router: all that routing needs (no language model)."""

    def __init__(self, tokenizer, router: MiniMLPRouter | None, names: list[str] | Callable[[], list[str]], defaults):
        self.tokenizer = tokenizer
        self.router = router
        self._names = names  # a list, or the engine's live adapter table (adapters come and go)
        self.defaults = defaults
        if router is not None and router.cfg.vocab_size != len(tokenizer):
            raise DLPError(f"The router was trained for a vocabulary of {router.cfg.vocab_size} tokens, "
                           f"this tokenizer has {len(tokenizer)}", hint="retrain it: python -m dlp train-router")

    @property
    def names(self) -> list[str]:
        """What the router chooses between: ``base`` (no adapter) first, then the loaded adapters."""
        adapters = list(self._names()) if callable(self._names) else list(self._names)
        return [BASE, *[n for n in adapters if n != BASE]]

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "Routing":
        router = load_router(manifest.router_path) if manifest.router_path else None
        return cls(load_tokenizer(manifest.base_sources), router, manifest.names, manifest.defaults)

    def probs(self, prompt: str) -> tuple[torch.Tensor, float]:
        """Probabilities over the loaded adapters; router labels not loaded are dropped, loaded
        adapters the router does not know get 0 (they can still be mixed by hand)."""
        if self.router is None:
            raise DLPError("No router is loaded", hint="train one with: python -m dlp train-router")
        raw, ms = compute.light(self._timed, prompt)  # here, on one thread: never waits for a decode
        labels = self.router.cfg.labels
        out = torch.tensor([float(raw[labels.index(n)]) if n in labels else 0.0 for n in self.names])
        if out.sum() <= 0:
            raise DLPError("The router knows none of the loaded adapters", hint="retrain it on these adapters")
        out = out / out.sum()
        return out, ms

    def _timed(self, prompt: str) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()  # the router's own time
        raw = self.router.probs(self.tokenizer, [prompt])[0]  # (n_labels,)
        return raw, (time.perf_counter() - start) * 1000

    def route(self, prompt: str, top_p: float | None = None, top_k: int | None = None,
              mode: str = "renorm", min_weight: float = 0.0) -> RouteResult:
        prompt = check_prompt(prompt)
        top_p = selection.check_top_p(self.defaults.top_p if top_p is None else top_p)
        top_k = selection.check_top_k(self.defaults.top_k if top_k is None else top_k)
        probs, ms = self.probs(prompt)
        selected = selection.select(probs, self.names, top_p, top_k, mode, min_weight)
        plain = selection.select(probs, self.names, top_p, top_k, mode) if min_weight else selected
        return RouteResult(prompt, dict(zip(self.names, probs.tolist())), selected, ms, top_p, top_k, mode,
                           float(min_weight), tuple(n for n in plain if n not in selected))


MAX_PROMPT_CHARS = 12_000  # refused before tokenizing, so a huge paste costs nothing


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise DLPError("The prompt is empty", hint="type a question, or pick one of the examples")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise DLPError(f"The prompt is {len(prompt):,} characters long, over the {MAX_PROMPT_CHARS:,}-character "
                       f"limit", hint="shorten it; prompts are also limited in tokens, about 3 characters of English each")
    return prompt.strip()



@dataclass
class Scope:
    """The adapters one request may use and the routing over them."""

    routing: Routing
    keys: dict[str, str]  # adapter name as shown -> key of its LoRA pair in the fused layers
    colors: dict[str, str] = field(default_factory=dict)
    mine: tuple[str, ...] = ()  # names this visitor added (empty for the shared scope)

    @property
    def names(self) -> list[str]:
        return list(self.keys)
