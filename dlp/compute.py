"""One long-lived thread for the process's heavy torch work (loading, decoding, training).

PyTorch's CPU wheels run their parallel ops on GNU OpenMP. Every OS thread that runs a parallel op gets
its own team of OpenMP workers, and once libgomp manages more threads than there are cores it stops
spinning between parallel regions and puts its workers to sleep, so each of the ~6,000 small ops of a
decode step pays a wake-up. Measured on 2 cores (Xeon, AMX): a single-adapter decode step took ~98 ms
in a fresh thread of a process whose main thread had already run the model, and ~57 ms where one thread
did everything. So the engine loads and generates on this one thread, whichever thread asks (Gradio's
workers, tests), and requests take turns on it: on a machine with few cores, two decodes at once were
never faster than one after the other. A command-line run claims its main thread instead (:func:`claim`).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
_OWNER: list[int] = []  # the id of the thread that does the heavy work, once known


def _mark() -> None:
    if not _OWNER:
        _OWNER.append(threading.get_ident())


_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlp-compute", initializer=_mark)


def claim() -> bool:
    """Make the calling thread the compute thread (the CLI's main thread: everything then runs inline, and
    Ctrl-C still stops it). False, and nothing changes, where another thread already has the role."""
    if not _OWNER:
        _OWNER.append(threading.get_ident())
    return _OWNER[0] == threading.get_ident()


def on_compute_thread() -> bool:
    return bool(_OWNER) and threading.get_ident() == _OWNER[0]


def submit(fn: Callable[..., T], *args, **kwargs) -> Future:
    """Queue ``fn`` on the compute thread (after whatever runs there now)."""
    return _POOL.submit(fn, *args, **kwargs)


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on the compute thread, waiting for its result; inline when already there."""
    if on_compute_thread():
        return fn(*args, **kwargs)
    return submit(fn, *args, **kwargs).result()
