"""The Manual mix tab: set the fusion weights by hand and compare with the base model."""

from __future__ import annotations

import gradio as gr

from dlp.engine import Column
from dlp.errors import DLPError

from .common import message, parse_options, parse_top_k, timing_line, user_error


def build(engine, shared) -> None:
    """``shared`` holds the Compare tab's controls (sampling settings and routing knobs)."""
    mix_names = ["base", *engine.names]  # weight on "base" (no adapter) scales the others down

    def run_manual(prompt, temperature, max_new_tokens, seed, *weights):
        try:
            options = parse_options(temperature, max_new_tokens, seed)
            mixture = {n: float(w) for n, w in zip(mix_names, weights) if w and float(w) > 0}
            total = sum(mixture.values())
            if not mixture:
                raise DLPError("All weights are 0", hint="move at least one slider above 0")
            mixture = {n: w / total for n, w in mixture.items()}
            label = "Manual mix: " + " + ".join(f"{n} {w:.2f}" for n, w in mixture.items())
            columns = [Column("base", "Base model", {}), Column("manual", label, mixture)]
            for update in engine.stream(prompt, columns, options, every=2):
                out = update.as_dict()["columns"]
                yield (out[0]["text"], timing_line(out[0]["timing"]),
                       gr.Textbox(value=out[1]["text"], label=label), timing_line(out[1]["timing"]))
        except Exception as exc:  # noqa: BLE001
            raise user_error(exc) from None

    def copy_router_weights(prompt, top_p, top_k, weighting):
        try:
            route = engine.route(prompt, float(top_p), parse_top_k(top_k), weighting)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            return [gr.skip()] * len(mix_names)
        return [round(route.selected.get(n, 0.0), 3) for n in mix_names]

    gr.Markdown("Set the fusion weights by hand (they are normalized to sum to 1) and compare with the base model. "
                "Weight on **base (no adapter)** scales every adapter's contribution down.")
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="manual-prompt")
            sliders = [gr.Slider(0, 1, value=0, step=0.05, label="base (no adapter)" if n == "base" else n)
                       for n in mix_names]
            with gr.Row():
                copy = gr.Button("Start from the router's weights")
                run = gr.Button("Generate with this mix", variant="primary", elem_id="manual-run")
        with gr.Column(scale=3):
            base = gr.Textbox(label="Base model", lines=10, interactive=False)
            t_base = gr.Markdown(elem_classes="col-timing")
            out = gr.Textbox(label="Manual mix", lines=10, interactive=False, elem_id="out-manual")
            t_out = gr.Markdown(elem_classes="col-timing")
    copy.click(copy_router_weights, [prompt, shared.top_p, shared.top_k, shared.weighting], sliders, api_name=False)
    run.click(run_manual, [prompt, shared.temperature, shared.max_new_tokens, shared.seed, *sliders],
              [base, t_base, out, t_out], api_name="manual")
