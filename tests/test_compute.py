"""The compute thread: all torch work on one long-lived thread, runs queued in turn, no deadlock inside."""

import subprocess
import sys
import threading
import time

from dlp import compute
from dlp.engine import Column
from dlp.generation import GenerationOptions

PROMPT = "what is the sum of two and three apples"


def test_work_runs_on_one_thread_and_nested_calls_run_inline():
    import contextvars

    seen = contextvars.ContextVar("seen", default=None)
    seen.set("caller's")
    assert compute.run(seen.get) == "caller's"  # Gradio's progress bar is found through context variables
    first = compute.run(threading.get_ident)
    assert first != threading.get_ident()
    assert compute.run(threading.get_ident) == first
    assert compute.run(lambda: compute.run(threading.get_ident)) == first  # no deadlock from inside


def test_a_run_waits_its_turn_says_so_and_is_timed_from_its_start(tiny_engine):
    gate = threading.Event()
    ahead = compute.submit(gate.wait, 5)  # another visitor's run holds the compute thread
    assert compute.busy()
    stream = tiny_engine.stream(PROMPT, [Column("base", "", {})], GenerationOptions(max_new_tokens=4))
    first = next(stream)
    assert first.state.waiting and not first.state.finished
    time.sleep(0.5)
    gate.set()
    last = None
    for last in stream:
        assert not last.state.waiting
    assert last.state.finished and last.state.timings[0].tokens > 0
    assert last.state.timings[0].prefill_ms < 500  # the wait is not counted as the prompt's time
    ahead.result()
    compute.run(lambda: None)  # the stream's own job has returned too
    assert not compute.busy()


def test_a_run_stopped_while_it_waits_generates_nothing(tiny_engine):
    gate, cancel = threading.Event(), threading.Event()
    compute.submit(gate.wait, 5)
    stream = tiny_engine.stream(PROMPT, [Column("base", "", {})], GenerationOptions(max_new_tokens=50), cancel=cancel)
    assert next(stream).state.waiting
    cancel.set()
    gate.set()
    last = None
    for last in stream:
        pass
    assert last.state.finished and last.state.cancelled and last.state.timings[0].tokens == 0


def test_routing_runs_at_once_while_a_run_holds_the_compute_thread(tiny_engine):
    import torch

    gate = threading.Event()
    compute.submit(gate.wait, 5)
    try:
        start = time.perf_counter()
        route = tiny_engine.route(PROMPT)  # from this thread, on one OpenMP thread: no wait, no second team
        assert time.perf_counter() - start < 1.0 and route.selected
    finally:
        gate.set()
    assert compute.run(torch.get_num_threads) == compute._THREADS  # the compute thread keeps its threads


def test_the_command_line_claims_its_main_thread():
    code = ("import threading; from dlp import compute; assert compute.claim(); "
            "assert compute.run(threading.get_ident) == threading.get_ident(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_generation_called_on_the_compute_thread_runs_inline(tiny_engine):
    def inside():
        return [u.state.finished for u in tiny_engine.stream(PROMPT, [Column("base", "", {})],
                                                             GenerationOptions(max_new_tokens=3))]
    states = compute.run(inside)
    assert states[-1] and not any(states[:-1])


def test_the_engine_loads_and_decodes_on_the_compute_thread(tiny_manifest, monkeypatch):
    from dlp.engine import Engine
    from dlp.manifest import load_manifest

    seen = {}
    load = Engine._load
    monkeypatch.setattr(Engine, "_load", lambda self, *a: (seen.setdefault("load", threading.get_ident()),
                                                           load(self, *a))[1])
    engine = Engine(load_manifest(tiny_manifest))
    generate = engine.model.generate
    monkeypatch.setattr(engine.model, "generate",
                        lambda *a, **k: (seen.setdefault("decode", threading.get_ident()), generate(*a, **k))[1])
    for _ in engine.stream(PROMPT, [Column("base", "", {})], GenerationOptions(max_new_tokens=2)):
        pass
    assert seen["load"] == seen["decode"] == compute.run(threading.get_ident) != threading.get_ident()
