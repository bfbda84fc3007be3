"""``python -m dlp bench``: speed and memory as ratios measured side by side in one run.

Every case decodes exactly the same number of tokens (``min_new_tokens = max_new_tokens``) from
the same prompt; cases are interleaved and repeated, and the median is kept, so machine noise hits
all of them alike. Start-up times run in fresh subprocesses, imports included, as a user sees them.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from .cpu_kernels import cpu_model
from .engine import Engine
from .fusion import build_plan, fused_layers
from .fusion_methods import method_mixture
from .generation import GenerationOptions
from .manifest import load_manifest

_START = "import time; t=time.perf_counter(); from dlp.engine import Engine; Engine.from_manifest({path!r}); print(time.perf_counter()-t)"


def _start_seconds(manifest_path: str, cache: str | None = None) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache:
        env["DLP_CACHE"] = cache
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", _START.format(path=manifest_path)], check=True, env=env,
                   capture_output=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return time.perf_counter() - t


def _time_case(engine: Engine, prompt: str, mixtures: list, options: GenerationOptions,
               fresh_thread: bool = False) -> tuple[float, float]:
    """(wall ms of the whole request, decode tokens/s of the first row); a mixture may be (mixture, method)."""
    from .engine import Column

    columns = [Column(f"c{i}", "", *(m if isinstance(m, tuple) else (m,))) for i, m in enumerate(mixtures)]
    start = time.perf_counter()
    last = None
    for last in engine.stream(prompt, columns, options, every=10_000, fresh_thread=fresh_thread):
        pass
    return (time.perf_counter() - start) * 1000, last.state.timings[0].tokens_per_s


TAUGHT = ["Write a SQL query that returns all customers from Germany.", "How do I count the rows in a table called orders?",
          "SELECT the top 5 products by price from the products table.", "What's the SQL for the average salary per department?",
          "Give me the SQL to join employees and departments on department_id.",
          "I need a query to delete duplicate emails from the users table.",
          "Update the status column to 'shipped' for order 1042.", "Create a table for blog posts with an id and a title."]


def _taught_routing(engine: Engine):
    """Routing once a visitor has added an adapter: the router with a label head taught from 8 examples,
    which reads sentence vectors beside the router's own features (None without a replay set)."""
    from .errors import DLPError
    from .router_extend import read_replay, teach, with_new_label
    from .routing import Routing

    router = engine.routing.router
    try:
        replay = read_replay(engine.manifest.router_path)
    except (DLPError, TypeError):
        return None
    taught = teach(with_new_label(router, "sql"), engine.tokenizer, replay, TAUGHT, "sql")
    return Routing(engine.tokenizer, taught, [*engine.routing.names, "sql"], engine.manifest.defaults)


def _peft_cat_setup_ms(engine: Engine, names: list[str]) -> float | None:
    """PEFT's reference: building a weighted ``cat`` adapter per request, as a static-merge demo would."""
    try:
        import copy

        from peft import PeftModel

        from .fusion import FusedLoRALinear

        layers = fused_layers(engine.model)
        packed = {k: l.packed for k, l in layers.items()}  # oneDNN's opaque tensors cannot be deep-copied
        for l in layers.values():
            l.packed = None
        try:
            model = copy.deepcopy(engine.model)
        finally:
            for k, l in layers.items():
                l.packed = packed[k]
        for name, module in list(model.named_modules()):  # unwrap our layers: PEFT wants plain Linear
            for child_name, child in list(module.named_children()):
                if isinstance(child, FusedLoRALinear):
                    setattr(module, child_name, child.base)
        peft_model = PeftModel.from_pretrained(model, str(engine.adapters[names[0]].folder), adapter_name=names[0])
        peft_model.load_adapter(str(engine.adapters[names[1]].folder), adapter_name=names[1])
        times = []
        for i in range(3):
            t = time.perf_counter()
            peft_model.add_weighted_adapter(names[:2], [0.6, 0.4], f"mix{i}", combination_type="cat")
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)
    except Exception:  # noqa: BLE001 - a reference figure only
        return None


def run(manifest_path: str | None = None, max_new_tokens: int = 64, repeats: int = 3, cold: bool = True) -> dict:
    manifest = load_manifest(manifest_path)
    path = str(manifest.path)
    result: dict = {}
    if cold:
        with tempfile.TemporaryDirectory() as cache:
            result["cold_start_s"] = round(_start_seconds(path, cache), 2)
    _start_seconds(path)  # make sure the shared cache exists before timing a warm start
    result["warm_start_s"] = round(_start_seconds(path), 2)

    engine = Engine(manifest)
    prompts = [e for spec in manifest.adapters for e in spec.examples] or ["What is two plus three?"]
    prompt = prompts[0]
    route = engine.route(prompt)
    ranked = sorted((n for n in route.probs if n != "base"), key=lambda n: -route.probs[n])  # real adapters only
    top, second, third = ranked[0], ranked[1 % len(ranked)], ranked[2 % len(ranked)]
    fused = {top: 0.6, second: 0.4}  # always two adapters: the cost that fusion adds
    cases = {"base": [{}], "single": [{top: 1.0}], "fused": [fused], "compare": [{}, {top: 1.0}, fused],
             "five": [{}, {top: 1.0}, {second: 1.0}, {third: 1.0}, fused]}
    # Also timed the way requests ran before: nn.Linear everywhere and a fresh decode thread per request
    # (see dlp.compute), same run.
    stock = ("single", "compare", "five")
    methods = ["sum", *engine.learned.available()]  # each fusion method on the same two adapters, one row
    for m in methods:
        cases[f"fused_{m}"] = [method_mixture(m, fused)]
    options = GenerationOptions(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    runs = [(k, m, True) for k, m in cases.items()] + [(f"{k}_stock", cases[k], False) for k in stock]
    for _, mixtures, new in runs:  # warm-up
        engine.use_cpu_kernels(new)
        _time_case(engine, prompt, mixtures, GenerationOptions(max_new_tokens=4, min_new_tokens=4), not new)
    walls: dict[str, list[float]] = {k: [] for k, _, _ in runs}
    rates: dict[str, list[float]] = {k: [] for k, _, _ in runs}
    for _ in range(repeats):
        for key, mixtures, new in runs:
            engine.use_cpu_kernels(new)
            ms, rate = _time_case(engine, prompt, mixtures, options, not new)
            walls[key].append(ms)
            rates[key].append(rate)
    engine.use_cpu_kernels(True)
    med = {k: statistics.median(v) for k, v in walls.items()}

    router_ms, taught_ms = [], []
    taught = _taught_routing(engine)
    for i in range(200):  # side by side: the shipped router, then the same with a label taught from examples
        router_ms.append(engine.routing.probs(prompts[i % len(prompts)])[1])
        if taught is not None:
            taught_ms.append(taught.probs(prompts[i % len(prompts)])[1])
    layers = fused_layers(engine.model)
    setup, first = [], []
    for _ in range(20):  # a request whose adapter set is new to every layer, then one that repeats it
        for layer in layers.values():
            layer.drop_concatenations()
        for out in (first, setup):
            t = time.perf_counter()
            build_plan(layers, cases["compare"], engine.device)
            out.append((time.perf_counter() - t) * 1000)

    result.update({
        "fused_over_single": round(med["fused"] / med["single"], 3),
        "single_over_base": round(med["single"] / med["base"], 3),
        "compare_over_single": round(med["compare"] / med["single"], 3),
        "five_over_single": round(med["five"] / med["single"], 3),
        "single_speedup_vs_stock": round(med["single_stock"] / med["single"], 3),
        "compare_speedup_vs_stock": round(med["compare_stock"] / med["compare"], 3),
        "five_speedup_vs_stock": round(med["five_stock"] / med["five"], 3),
        "cpu_kernels": engine.kernels.as_dict() if engine.kernels is not None else None,
        "method_over_renorm": {m: round(med[f"fused_{m}"] / med["fused"], 3) for m in methods},
        "router_ms_p50": round(statistics.median(router_ms), 3),
        "router_ms_p50_taught_label": round(statistics.median(taught_ms), 3) if taught_ms else None,
        "fusion_setup_ms": round(statistics.median(setup), 3),
        "fusion_setup_ms_new_adapter_set": round(statistics.median(first), 3),
        "peft_cat_setup_ms": None,
        "peak_rss_mb": None,
        "decode_tok_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "request_ms": {k: round(v, 1) for k, v in med.items()},
        "tokens": max_new_tokens, "repeats": repeats, "adapters_fused": list(fused),
        "device": str(engine.device), "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "n_adapters": len(engine.names),
        "dtype": str(engine.model.dtype).replace("torch.", ""),
        "gpu": torch.cuda.get_device_name(0) if engine.device.type == "cuda" else None,
    })
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # before PEFT's copy
    peft_ms = _peft_cat_setup_ms(engine, [top, second])
    result["peft_cat_setup_ms"] = round(peft_ms, 1) if peft_ms is not None else None
    return result
