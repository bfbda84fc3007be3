"""Visitor adapters: a LoRA one visitor adds is loaded for that visitor alone, and dropped with the session.

Its LoRA pair sits in the shared fused layers under a key no manifest name can take (``~<session>:<name>``),
so the batched forward needs nothing new. What keeps it private is the :class:`~dlp.routing.Scope` a
request runs in: only its own session's scope lists the key, and that scope routes with the session's
own copy of the router, taught the new label from the visitor's example prompts (the shared router and
everyone else's routing never change). The copy shares the router's frozen embedding table, so a session
router costs its label head (~0.08M parameters), not another 19 MB.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from . import compute
from .adapters import AdapterInfo
from .errors import DLPError
from .router import MiniMLPRouter
from .routing import Routing, Scope

MAX_PER_SESSION = 3
MAX_VISITOR_BYTES = 64 * 2**20  # per adapter file, for visitors (the CLI allows more)
MAX_VISITOR_RANK = 64
PALETTE = ["#e377c2", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"]


def shared_server() -> bool:
    """A public server (a Space, or ``DLP_SHARED=1``): visitors' adapters stay theirs, nothing is written."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("DLP_SHARED", "") not in ("", "0")


@dataclass
class VisitorAdapter:
    name: str
    key: str  # where its LoRA pair lives in the fused layers
    info: AdapterInfo
    examples: list[str]
    color: str


@dataclass
class _Session:
    router: MiniMLPRouter
    adapters: dict[str, VisitorAdapter] = field(default_factory=dict)


class SessionAdapters:
    """Each session's own adapters and router; the engine owns one (``engine.visitors``)."""

    def __init__(self, engine, max_total: int | None = None):
        self.engine = engine
        self.max_total = max_total or int(os.environ.get("DLP_MAX_VISITOR_ADAPTERS", "24"))  # memory on a Space
        self._sessions: dict[str, _Session] = {}
        self._replay: list[dict] | None = None
        self._lock = threading.Lock()
        self._pending = 0  # additions being validated or taught right now (they hold a slot)
        self._ended: dict[str, None] = {}  # sessions that ended (an addition finishing late must not revive one)

    @property
    def count(self) -> int:
        """Visitor adapters loaded now, all sessions together."""
        return sum(len(s.adapters) for s in self._sessions.values())

    def names(self, session: str | None) -> list[str]:
        s = self._sessions.get(session or "")
        return list(s.adapters) if s else []

    def names_everywhere(self) -> list[str]:
        with self._lock:
            return [n for s in self._sessions.values() for n in s.adapters]

    def forget_replay(self) -> None:
        """The shared router changed (an adapter was kept for everyone): reread its replay set."""
        self._replay = None

    def get(self, session: str | None, name: str) -> VisitorAdapter | None:
        s = self._sessions.get(session or "")
        return s.adapters.get(name) if s else None

    def scope(self, session: str | None) -> Scope:
        engine = self.engine
        shared = {n: n for n in engine.adapters}
        colors = {a.name: a.color for a in engine.manifest.adapters}
        s = self._sessions.get(session or "")
        if s is None:
            return Scope(engine.routing, shared, colors)
        mine = {n: a.key for n, a in s.adapters.items()}
        routing = Routing(engine.tokenizer, s.router, [*shared, *mine], engine.manifest.defaults)
        return Scope(routing, {**shared, **mine}, {**colors, **{n: a.color for n, a in s.adapters.items()}},
                     tuple(mine))

    def add(self, session: str, name: str, folder, examples: list[str],
            progress: Callable[[float], None] | None = None) -> VisitorAdapter:
        """Validate, teach a copy of the router, then load; a refusal at any step leaves nothing behind."""
        from .adapter_admin import check_adapter, check_examples, check_name
        from .fusion import add_lora, remove_lora, wrap_linear_layers
        from .router_extend import read_replay, teach, with_new_label

        if not session:
            raise DLPError("No session: adapters added on the page belong to the visitor's session")
        engine = self.engine
        name = (name or "").strip()
        with self._lock:
            s = self._sessions.get(session)
            check_name(name, [*engine.adapters, *(s.adapters if s else ())])
            if s and len(s.adapters) >= MAX_PER_SESSION:
                raise DLPError(f"You already have {MAX_PER_SESSION} adapters of your own; that is the limit",
                               hint="remove one first")
            if self.count + self._pending >= self.max_total:
                raise DLPError("The server holds as many visitors' adapters as it can right now",
                               hint="try again in a few minutes")
            # What this addition builds on, read once: the session's router and its adapters' examples.
            start = s.router if s else engine.routing.router
            own = [{"prompt": e, "target": {a.name: 1.0}} for a in (s.adapters.values() if s else ()) for e in a.examples]
            if start is None:
                raise DLPError("No router is loaded, so a new adapter could never be routed to")
            self._pending += 1
        try:
            examples = check_examples(examples)
            if self._replay is None:
                self._replay = read_replay(engine.manifest.router_path)
            key = f"~{session}:{name}"

            def load_and_teach():  # torch work: on the compute thread (dlp.compute)
                info, weights = check_adapter(name, folder, engine.model, MAX_VISITOR_BYTES, MAX_VISITOR_RANK)
                taught = teach(with_new_label(start, name), engine.tokenizer, self._replay + own, examples, name,
                               progress=progress)
                layers = wrap_linear_layers(engine.model, {k.rsplit(".", 1)[-1] for k in weights})
                add_lora(layers, key, weights)
                return info, taught, layers

            info, taught, layers = compute.run(load_and_teach)
            with self._lock:
                if session in self._ended:
                    remove_lora(layers, key)
                    raise DLPError("The session ended while the adapter was being added")
                s = self._sessions.setdefault(session, _Session(taught))
                s.router = taught
                color = PALETTE[(len(engine.manifest.adapters) + len(s.adapters)) % len(PALETTE)]
                adapter = VisitorAdapter(name, key, info, examples, color)
                s.adapters[name] = adapter
            return adapter
        finally:
            with self._lock:
                self._pending -= 1

    def remove(self, session: str, name: str) -> None:
        from .fusion import fused_layers, remove_lora
        from .router_extend import without_label

        with self._lock:
            s = self._sessions.get(session or "")
            if s is None or name not in s.adapters:
                raise DLPError(f"You have no adapter named '{name}'")
            adapter = s.adapters.pop(name)
            if s.adapters:
                s.router = without_label(s.router, name)
            else:
                del self._sessions[session]  # back to the shared router, exactly
        compute.run(remove_lora, fused_layers(self.engine.model), adapter.key)

    def drop(self, session: str | None) -> int:
        """Forget a session (it ended); returns how many adapters it held."""
        with self._lock:
            self._ended[session or ""] = None
            while len(self._ended) > 10_000:
                del self._ended[next(iter(self._ended))]
        names = self.names(session)
        for name in names:
            try:
                self.remove(session, name)
            except DLPError:
                pass  # removed meanwhile
        return len(names)
