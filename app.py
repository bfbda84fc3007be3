"""DLP-LoRA Studio: watch a router pick LoRA adapters and see what fusing them does.

UI only: every model call goes through ``dlp``, and each tab lives in ``ui/``. This file is the page's
table of contents: ``build_demo(engine)`` lays the tabs out; running it loads the engine from
``adapters_manifest.json`` and launches the page.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from dlp.charts import BASE_COLOR
from dlp.engine import Engine
from dlp.errors import DLPError
from dlp.session_adapters import MAX_VISITOR_BYTES
from ui import adapters, batch, compare, info, manual, sweep
from ui.common import read_json

RESULTS = Path(__file__).resolve().parent / "assets" / "eval"

CSS = """
#title h1 {margin-bottom: 0}
.col-timing {font-size: 0.85em; color: #555; min-height: 1.4em}
#out-base textarea, #out-single textarea, #out-fused textarea, #out-learned textarea, .out-extra textarea,
  #out-manual textarea
  {font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.9em}
.weights-table td, .weights-table th {padding: 2px 10px}
.stale {background: #fff4d6; border-left: 4px solid #e0a800; padding: 6px 10px; margin-top: 6px; border-radius: 4px}
#run-prompt {font-size: 0.92em; color: #333}
#timing table {display: block; overflow-x: auto; white-space: nowrap}
@media (max-width: 700px) {.results-md table {display: block; overflow-x: auto; white-space: nowrap}}
.textfield {word-break: normal !important; overflow-wrap: anywhere}  /* word diffs: Gradio breaks inside words */
#weights table {width: 100%}
#weights td:last-child {width: 30%}
.shaded {white-space: pre-wrap; line-height: 1.7; padding: 6px 2px}
.shaded span {border-radius: 3px}
.shade-scale {display: flex; align-items: center; gap: 8px; font-size: 0.8em; color: #555; margin: 4px 0 8px}
.shade-scale .bar {flex: 0 1 220px; height: 10px; border-radius: 3px; border: 1px solid #ddd}
body.presenter #settings {display: none}
body.presenter #answers textarea {font-size: 1.35em; line-height: 1.45}
body.presenter #prompt textarea {font-size: 1.3em}
body.presenter .col-timing {font-size: 1em}
"""


def build_demo(engine: Engine) -> gr.Blocks:
    manifest = engine.manifest
    colors = {"base": BASE_COLOR, **{a.name: a.color for a in manifest.adapters}}
    bench_ratio = read_json(RESULTS / "bench.json").get("fused_over_single")
    tasks = read_json(RESULTS / "results.json").get("tasks", {})
    weak = [t for t, row in tasks.items() if t in engine.names and row.get("single_minus_base_ci95", [1])[0] <= 0]
    # delete_cache: visitors' uploaded adapters (up to 64 MB) and run records leave Gradio's cache after an hour
    with gr.Blocks(title="DLP-LoRA Studio", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# DLP-LoRA Studio\nA router picks LoRA adapters for your prompt (or none: **base**); the fused "
                    f"answer streams beside the base model and the best single adapter. Base model: "
                    f"**{manifest.base_name}** on **{engine.device.type.upper()}**, {len(engine.names)} adapters: "
                    f"{', '.join(engine.names)}.", elem_id="title")
        with gr.Tab("Compare"):
            shared = compare.build(engine, colors, bench_ratio, demo, weak)
        with gr.Tab("Manual mix") as tab:
            slots = manual.build(engine, shared, tab)
        with gr.Tab("Sweep") as tab:
            sweep.build(engine, shared, colors, tab)
        with gr.Tab("Batch"):
            batch.build(engine, shared)
        with gr.Tab("Adapters"):
            adapters.build(engine, demo, slots)
        with gr.Tab("Results"):
            info.results_tab(RESULTS, colors)
        with gr.Tab("How it works"):
            info.method_tab(RESULTS)
    return demo


def launch(engine: Engine, **kwargs):
    """Queue with sane limits, then launch; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured."""
    demo = build_demo(engine)
    demo.queue(default_concurrency_limit=int(os.environ.get("DLP_CONCURRENCY", "2")), max_size=64)
    kwargs.setdefault("theme", gr.themes.Soft(primary_hue="indigo"))
    kwargs.setdefault("css", CSS)
    kwargs.setdefault("show_error", True)
    kwargs.setdefault("max_file_size", f"{MAX_VISITOR_BYTES // 2**20 + 1}mb")  # uploads: visitors' adapters
    kwargs.setdefault("allowed_paths", [str(adapters.EXAMPLE)])  # the example adapter the form can be filled with
    demo.launch(**kwargs)
    return demo


def main() -> None:
    import logging
    import sys

    from dlp.base_model import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()
    try:
        engine = Engine.from_manifest(os.environ.get("DLP_MANIFEST"))
    except DLPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"Engine ready in {engine.load_seconds:.1f} s ({len(engine.names)} adapters on {engine.device}).")
    launch(engine)


if __name__ == "__main__":
    main()
