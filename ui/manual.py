"""The Manual mix tab: set the fusion weights by hand and compare with the base model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from dlp.engine import Column
from dlp.errors import DLPError
from dlp.export_mix import export_mix
from dlp.session_adapters import MAX_PER_SESSION

from .common import (cancel_run, message, on_page, parse_options, parse_top_k, session_of, stopped_mark,
                     timing_line, user_error)


def build(engine, shared, tab: gr.Tab) -> SimpleNamespace:
    """``shared`` holds the Compare tab's controls (prompt, sampling settings and routing knobs); opening
    ``tab`` brings the Compare prompt over when this tab's own is empty. Returns the
    visitor's slider slots and ``slot_updates(session)``, which the Adapters tab calls after an add or remove."""
    fixed = ["base", *engine.names]  # weight on "base" (no adapter) scales the others down

    def mix_names(request) -> list[str]:
        """Fixed sliders, then one slot per adapter this visitor added (in the order they were added)."""
        return [*fixed, *engine.visitors.names(session_of(request))]

    def run_manual(request: gr.Request, prompt, temperature, max_new_tokens, seed, *weights, cancel=None):
        """``request`` first: Gradio injects it only among positional parameters. ``weights``: the sliders,
        then the loop guard (the Compare tab's switch; the API fills its default when left out)."""
        try:
            *weights, loop_guard = weights
            options = parse_options(temperature, max_new_tokens, seed, loop_guard)
            mixture = mixture_of(request, weights)
            label = "Manual mix: " + " + ".join(f"{n} {w:.2f}" for n, w in mixture.items())
            columns = [Column("base", "Base model", {}), Column("manual", label, mixture)]
            scope = engine.scope(session_of(request))
            for update in engine.stream(prompt, columns, options, every=2, scope=scope, cancel=cancel):
                out = update.as_dict()["columns"]
                yield (out[0]["text"], timing_line(out[0]["timing"]) + stopped_mark(update, 0),
                       gr.Textbox(value=out[1]["text"], label=label),
                       timing_line(out[1]["timing"]) + stopped_mark(update, 1))
        except Exception as exc:  # noqa: BLE001
            raise user_error(exc) from None

    def mixture_of(request, weights) -> dict[str, float]:
        mixture = {n: float(w) for n, w in zip(mix_names(request), weights) if w and float(w) > 0}
        if not mixture:
            raise DLPError("All weights are 0", hint="move at least one slider above 0")
        total = sum(mixture.values())
        return {n: w / total for n, w in mixture.items()}

    def download_mix(request: gr.Request, *weights):
        """The mixture on screen as one PEFT LoRA (zip): the exact ``cat`` combination, for any engine."""
        try:
            mixture = mixture_of(request, weights)
            if not any(n != "base" for n in mixture):
                raise DLPError("Only base has weight: there is no adapter to export")
            folder = Path(tempfile.mkdtemp(prefix="dlp-mix-"))
            export_mix(engine, mixture, folder / "dlp-mix", engine.scope(session_of(request)))
            archive = shutil.make_archive(str(folder / "dlp-mix"), "zip", folder / "dlp-mix")
            return gr.DownloadButton(value=archive, visible=True)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            return gr.skip()

    def copy_router_weights(prompt, top_p, top_k, weighting, request: gr.Request):
        n_sliders = len(fixed) + MAX_PER_SESSION
        try:
            scope = engine.scope(session_of(request))
            route = engine.route(prompt, float(top_p), parse_top_k(top_k), weighting, scope)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            return [gr.skip()] * n_sliders
        values = [round(route.selected.get(n, 0.0), 2) for n in mix_names(request)]  # on the sliders' step
        return values + [0.0] * (n_sliders - len(values))

    def slot_updates(session: str) -> list:
        mine = engine.visitors.names(session)
        return [gr.Slider(visible=i < len(mine), label=f"{mine[i]} (yours)" if i < len(mine) else "", value=0)
                for i in range(MAX_PER_SESSION)]

    gr.Markdown("Set the fusion weights by hand (they are normalized to sum to 1) and compare with the base model. "
                "Weight on **base (no adapter)** scales every adapter's contribution down. **Export** writes the "
                "mix as one PEFT LoRA (the exact `cat` combination: ranks add up, weights folded in), which any "
                "engine that serves PEFT adapters loads as it is.")
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="manual-prompt")
            sliders = [gr.Slider(0, 1, value=0, step=0.01, label="base (no adapter)" if n == "base" else n)
                       for n in fixed]
            slots = [gr.Slider(0, 1, value=0, step=0.01, visible=False, elem_classes="slot")
                     for _ in range(MAX_PER_SESSION)]
            with gr.Row():
                copy = gr.Button("Start from the router's weights")
                run = gr.Button("Generate with this mix", variant="primary", elem_id="manual-run")
                stop = gr.Button("Stop", elem_id="manual-stop")
            with gr.Row():
                export = gr.Button("Export this mix as one PEFT adapter", size="sm", elem_id="manual-export")
                export_file = gr.DownloadButton("Download the adapter (zip)", visible=False, size="sm",
                                                elem_id="manual-export-file")
        with gr.Column(scale=3):
            base = gr.Textbox(label="Base model", lines=10, interactive=False)
            t_base = gr.Markdown(elem_classes="col-timing")
            out = gr.Textbox(label="Manual mix", lines=10, interactive=False, elem_id="out-manual")
            t_out = gr.Markdown(elem_classes="col-timing")
    copy.click(copy_router_weights, [prompt, shared.top_p, shared.top_k, shared.weighting], [*sliders, *slots],
               api_name=False)
    inputs = [prompt, shared.temperature, shared.max_new_tokens, shared.seed, *sliders, *slots, shared.loop_guard]
    run.click(on_page(run_manual, 4), inputs, [base, t_base, out, t_out], api_name=False)
    stop.click(cancel_run, None, None, queue=False, api_name=False)
    export.click(download_mix, [*sliders, *slots], export_file, api_name="export_mix")
    gr.Button(visible=False).click(run_manual, inputs, [base, t_base, out, t_out], api_name="manual")
    tab.select(lambda mine, theirs: gr.skip() if (mine or "").strip() else theirs, [prompt, shared.prompt], prompt,
               api_name=False, show_progress="hidden")
    return SimpleNamespace(slots=slots, slot_updates=slot_updates)
