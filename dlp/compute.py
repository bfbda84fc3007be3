"""One long-lived thread for the process's heavy torch work (loading, decoding, training).

PyTorch's CPU wheels run their parallel ops on GNU OpenMP. Every OS thread that runs a parallel op gets
its own team of OpenMP workers, and once libgomp manages more threads than there are cores it stops
spinning between parallel regions and puts its workers to sleep, so each of the ~6,000 small ops of a
decode step pays a wake-up. Measured on 2 cores (Xeon, AMX): a single-adapter decode step took ~98 ms
in a fresh thread of a process whose main thread had already run the model, and ~57 ms where one thread
did everything. So the engine loads and generates on this one thread, whichever thread asks (Gradio's
workers, tests), and requests take turns on it: on a machine with few cores, two decodes at once were
never faster than one after the other. A command-line run claims its main thread instead (:func:`claim`).

Small work that must not wait behind a decode (the router: well under a millisecond) runs where it is asked
instead, through :func:`light`, on a single OpenMP thread, which starts no second team: measured, a decode
step stayed at ~51 ms with router calls from a live Gradio-like thread done that way, against ~109 ms without.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

import torch

T = TypeVar("T")
_OWNER: list[int] = []  # the id of the thread that does the heavy work, once known
_THREADS = torch.get_num_threads()  # torch's choice at import (cores, or OMP_NUM_THREADS), before any light()


def _mark() -> None:
    if not _OWNER:
        _OWNER.append(threading.get_ident())
    torch.set_num_threads(_THREADS)  # not the one-thread setting that light() leaves for threads started later


_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlp-compute", initializer=_mark)


def claim() -> bool:
    """Make the calling thread the compute thread (the CLI's main thread: everything then runs inline, and
    Ctrl-C still stops it). False, and nothing changes, where another thread already has the role."""
    if not _OWNER:
        _OWNER.append(threading.get_ident())
    return _OWNER[0] == threading.get_ident()


def on_compute_thread() -> bool:
    return bool(_OWNER) and threading.get_ident() == _OWNER[0]


class _Pending:
    """How many submitted jobs have not finished (what the page tells a visitor who has to wait)."""

    def __init__(self):
        self.count, self.lock = 0, threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.count += n


_PENDING = _Pending()


def busy() -> bool:
    """Work is queued or running on the compute thread: a new run would wait its turn."""
    return _PENDING.count > 0


def submit(fn: Callable[..., T], *args, **kwargs) -> Future:
    """Queue ``fn`` on the compute thread (after whatever runs there now), in a copy of the caller's context
    variables (Gradio finds a handler's progress bar through them)."""
    _PENDING.add(1)
    context = contextvars.copy_context()

    def job():
        try:
            return context.run(fn, *args, **kwargs)
        finally:
            _PENDING.add(-1)

    return _POOL.submit(job)


_LIGHT = threading.local()


def light(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` here and now, on one OpenMP thread unless this is the compute thread."""
    if not on_compute_thread() and not getattr(_LIGHT, "single", False):
        torch.set_num_threads(1)  # this thread's OpenMP and MKL setting (threads that start later default to it)
        _LIGHT.single = True
    return fn(*args, **kwargs)


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on the compute thread, waiting for its result; inline when already there."""
    if on_compute_thread():
        return fn(*args, **kwargs)
    return submit(fn, *args, **kwargs).result()
