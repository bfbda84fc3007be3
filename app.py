"""DLP-LoRA Studio: watch a router pick LoRA adapters and see what fusing them does.

UI only: every model call goes through ``dlp``. ``build_demo(engine)`` wires the page;
running this file loads the engine from ``adapters_manifest.json`` and launches it.
"""

from __future__ import annotations

import html
import json
import os
import threading
from pathlib import Path

import gradio as gr

from dlp.charts import BASE_COLOR, results_chart, router_chart, timing_chart, two_skill_chart
from dlp.engine import Column, Engine, RouteResult
from dlp.errors import DLPError
from dlp.generation import GenerationOptions

MAX_SINGLES = 3
COLUMN_MIN = 210  # px per answer column: base, three singles and fused fit in one row from ~1200 px
RESULTS = Path(__file__).resolve().parent / "assets" / "eval"

METHOD = r"""
### How DLP-LoRA works
1. **Sentence-level routing.** A mini-MLP router (~5M parameters, no language model inside) reads the whole
   prompt once and gives a probability for every loaded LoRA adapter.
2. **Top-p selection.** Adapters are sorted by probability and the smallest set whose probabilities sum to at
   least *p* is kept (always at least one; *top-k* caps the count).
3. **Fusion for the whole answer.** The kept probabilities are renormalized into weights *w*, and every adapted
   layer computes, for every generated token,

   $$y = W x + \sum_i w_i \,\frac{\alpha_i}{r_i}\, B_i A_i x$$

   In this demo the base, single-adapter and fused answers are rows of **one batch**: each row carries its own
   mixture, so they stream side by side from a single forward pass per token.

Papers: [DLP-LoRA (arXiv 2410.01497)](https://arxiv.org/abs/2410.01497) ·
[Mixture-of-LoRAs (arXiv 2403.03432)](https://arxiv.org/abs/2403.03432).
The *softmax* weighting option reproduces the original repository's code (a softmax over the kept
probabilities, which flattens the weights); *renorm* follows the paper's text.
"""

CSS = """
#title h1 {margin-bottom: 0}
.col-timing {font-size: 0.85em; color: #555; min-height: 1.4em}
#out-base textarea, #out-single textarea, #out-fused textarea, .out-extra textarea, #out-manual textarea
  {font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.9em}
.weights-table td, .weights-table th {padding: 2px 10px}
.stale {background: #fff4d6; border-left: 4px solid #e0a800; padding: 6px 10px; margin-top: 6px; border-radius: 4px}
#run-prompt {font-size: 0.92em; color: #333}
#timing table {display: block; overflow-x: auto; white-space: nowrap}
#weights table {max-width: 100%}
"""


_RUNS: dict[str, threading.Event] = {}  # session -> the cancel flag of its run on screen (one run per visitor)


def _new_run(request: gr.Request | None) -> threading.Event:
    """A fresh cancel flag for this visitor's run; a run still going for the same visitor is stopped."""
    key = getattr(request, "session_hash", None) or "anonymous"
    old = _RUNS.get(key)
    if old is not None:
        old.set()
    _RUNS[key] = threading.Event()
    return _RUNS[key]


def _cancel_run(request: gr.Request = None) -> None:
    """Stop: the generate thread ends within a token and the partial text stays on screen."""
    event = _RUNS.get(getattr(request, "session_hash", None) or "anonymous")
    if event is not None:
        event.set()


def _message(exc: Exception) -> str:
    if isinstance(exc, DLPError):
        return str(exc)
    return f"Something went wrong ({type(exc).__name__}: {exc}). Your inputs are kept; try again."


def _run_line(prompt: str, settings: dict) -> str:
    text = " ".join(prompt.split())
    text = text if len(text) <= 160 else text[:159] + "…"
    parts = [f"top-p {settings['top_p']:.2f}"]
    if settings["top_k"]:
        parts.append(f"top-k {settings['top_k']}")
    parts += [settings["weighting"], f"temperature {settings['temperature']:.2f}", f"seed {settings['seed']}",
              f"max {settings['max_new_tokens']} tokens"]
    return f"**On screen:** “{html.escape(text)}” · " + " · ".join(parts)


def _stale_note(prompt: str, top_p, top_k, weighting, last_run: dict | None) -> str:
    """Said plainly when the chart previews settings the answers below were not produced with."""
    if not last_run:
        return ""
    now = {"prompt": (prompt or "").strip(), "top_p": round(float(top_p), 4), "top_k": int(top_k or 0),
           "weighting": weighting}
    then = {k: last_run.get(k) for k in now}
    then["top_p"] = round(float(then["top_p"] or 0), 4)
    if now == then:
        return ""
    return ("<div class='stale'>Preview only: the answers below come from the earlier run (see “On screen”). "
            "Press <b>Run</b> to generate with these settings.</div>")


def _weights_html(route: RouteResult, colors: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><td><span style='color:{colors.get(n, '#888')}'>&#9632;</span> "
        f"{html.escape(n) if n != 'base' else 'base (no adapter)'}</td>"
        f"<td>{route.probs[n]:.3f}</td><td><b>{w:.3f}</b></td>"
        f"<td><div style='background:{colors.get(n, '#888')};height:10px;width:{int(w * 70)}px'></div></td></tr>"
        for n, w in route.selected.items()
    )
    return (f"<p><b>Fusion weights as applied</b> (top-p {route.top_p:.2f}"
            f"{f', top-k {route.top_k}' if route.top_k else ''}, {route.mode}) · router {route.router_ms:.2f} ms</p>"
            f"<table class='weights-table'><tr><th>adapter</th><th>p</th><th>weight</th><th></th></tr>{rows}</table>")


def _timing_line(t: dict) -> str:
    return (f"first token {t['ttft_ms']:.0f} ms · {t['tokens_per_s']:.1f} tok/s · {t['tokens']} tokens · "
            f"total {t['total_ms'] / 1000:.2f} s")


def _timing_table(columns: list[dict]) -> str:
    head = "| column | router ms | set-up ms | prefill ms | decode tok/s | tokens | total ms |\n|---|---|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {c['label']} | {c['timing']['router_ms']:.2f} | {c['timing']['setup_ms']:.2f} | {c['timing']['prefill_ms']:.0f} | "
        f"{c['timing']['tokens_per_s']:.1f} | {c['timing']['tokens']} | {c['timing']['total_ms']:.0f} |" for c in columns)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _user_error(exc: Exception) -> gr.Error:
    return gr.Error(_message(exc))


def _options(temperature, max_new_tokens, seed) -> GenerationOptions:
    try:
        return GenerationOptions(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                                 seed=int(seed or 0))
    except (TypeError, ValueError):
        raise DLPError("max new tokens and seed must be whole numbers, temperature a number") from None


def _top_k(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise DLPError(f"top-k must be a whole number, got {value!r}") from None


def build_demo(engine: Engine) -> gr.Blocks:
    manifest = engine.manifest
    names = engine.names
    colors = {"base": BASE_COLOR, **{a.name: a.color for a in manifest.adapters}}
    mix_names = ["base", *names]  # the Manual mix can weigh in "no adapter" too: it scales the others down
    d = manifest.defaults
    bench = _read_json(RESULTS / "bench.json")
    bench_ratio = bench.get("fused_over_single")
    examples = [ex for a in manifest.adapters for ex in a.examples[:1]] + list(manifest.mixed_examples)

    # ---- handlers (thin: validate, call the engine, shape outputs) -------------------------------------
    def route_only(prompt, top_p, top_k, weighting, last_run=None):
        """Routing only (no generation), so moving top-p updates the chart at once."""
        if not (prompt or "").strip():
            return gr.skip(), gr.skip()
        try:
            route = engine.route(prompt, float(top_p), _top_k(top_k), weighting)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(_message(exc))
            return gr.skip(), gr.skip()
        note = _stale_note(prompt, top_p, top_k, weighting, last_run)
        return (router_chart(route.probs, route.selected, colors, route.top_p),
                _weights_html(route, colors) + note)

    def route_button(prompt, top_p, top_k, weighting, last_run=None):
        if not (prompt or "").strip():
            gr.Warning("The prompt is empty: type a question, or pick one of the examples")
            return gr.skip(), gr.skip()
        return route_only(prompt, top_p, top_k, weighting, last_run)

    def compare_stream(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single, cancel=None):
        """The 14 Compare outputs per streamed update (chart, weights, base, 3 singles, fused, timing)."""
        options = _options(temperature, max_new_tokens, seed)
        n_single = int(n_single)
        first = True
        for update in engine.compare(prompt, float(top_p), _top_k(top_k), n_single, options, weighting, every=2,
                                     cancel=cancel):
            out = update.as_dict()
            cols = out["columns"]
            base, singles, fused = cols[0], cols[1:-1], cols[-1]
            boxes = []
            for i in range(MAX_SINGLES):
                if i < len(singles):
                    boxes += [gr.Textbox(value=singles[i]["text"], label=singles[i]["label"]),
                              _timing_line(singles[i]["timing"])]
                else:
                    boxes += ["", ""]
            visible = [gr.Column(visible=i < len(singles)) for i in range(MAX_SINGLES)]
            done = update.state.finished
            show = first or done  # the chart on the first and the last update (API callers read the last)
            chart = router_chart(update.route.probs, update.route.selected, colors, update.route.top_p) \
                if show else gr.skip()
            weights = _weights_html(update.route, colors) if show else gr.skip()
            stopped = " (stopped)" if done and update.state.cancelled else ""
            first = False
            yield [chart, weights, base["text"], _timing_line(base["timing"]) + stopped, *boxes, *visible,
                   gr.Textbox(value=fused["text"], label=fused["label"]), _timing_line(fused["timing"]) + stopped,
                   _timing_table(cols), timing_chart(cols, bench_ratio) if done else gr.skip()], update

    def run_compare(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single):
        """The API endpoint: errors are raised, as API callers expect."""
        try:
            for outs, _ in compare_stream(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single):
                yield outs
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc) from None

    def run_compare_ui(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single,
                       request: gr.Request):
        """The page: one run per visitor (a new Run stops the old one), errors as one message with the
        outputs left as they were, and the run's prompt and settings shown above its answers."""
        cancel = _new_run(request)
        settings = {"prompt": (prompt or "").strip(), "top_p": top_p, "top_k": top_k, "weighting": weighting,
                    "temperature": temperature, "seed": seed, "max_new_tokens": max_new_tokens}
        try:
            first = True
            for outs, update in compare_stream(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed,
                                               n_single, cancel):
                if first:
                    settings["top_k"] = update.route.top_k
                yield [*outs, _run_line(settings["prompt"], settings) if first else gr.skip(),
                       settings if first else gr.skip()]
                first = False
        except Exception as exc:  # noqa: BLE001
            gr.Warning(_message(exc))
            yield [gr.skip()] * (len(outputs) + 2)

    def run_manual(prompt, temperature, max_new_tokens, seed, *weights):
        try:
            options = _options(temperature, max_new_tokens, seed)
            mixture = {n: float(w) for n, w in zip(mix_names, weights) if w and float(w) > 0}
            total = sum(mixture.values())
            if not mixture:
                raise DLPError("All weights are 0", hint="move at least one slider above 0")
            mixture = {n: w / total for n, w in mixture.items()}
            label = "Manual mix: " + " + ".join(f"{n} {w:.2f}" for n, w in mixture.items())
            columns = [Column("base", "Base model", {}), Column("manual", label, mixture)]
            for update in engine.stream(prompt, columns, options, every=2):
                out = update.as_dict()["columns"]
                yield (out[0]["text"], _timing_line(out[0]["timing"]),
                       gr.Textbox(value=out[1]["text"], label=label), _timing_line(out[1]["timing"]))
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc) from None

    def copy_router_weights(prompt, top_p, top_k, weighting):
        try:
            route = engine.route(prompt, float(top_p), _top_k(top_k), weighting)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(_message(exc))
            return [gr.skip()] * len(mix_names)
        return [round(route.selected.get(n, 0.0), 3) for n in mix_names]

    # ---- layout ------------------------------------------------------------------------------------
    with gr.Blocks(title="DLP-LoRA Studio") as demo:
        gr.Markdown(f"# DLP-LoRA Studio\nA router picks LoRA adapters for your prompt; the fused answer streams beside "
                    f"the base model and the best single adapter. Base model: **{manifest.base_name}** on "
                    f"**{engine.device.type.upper()}**, {len(names)} adapters: {', '.join(names)}.", elem_id="title")
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column(scale=3):
                    prompt = gr.Textbox(label="Prompt", lines=4, elem_id="prompt",
                                        info=f"Up to {d.max_prompt_tokens:,} tokens (about {3 * d.max_prompt_tokens:,} "
                                             f"characters); longer prompts are refused, never cut.",
                                        placeholder="Ask a math question, ask for a Python function, a French "
                                                    "translation, a review's sentiment, a science quiz answer, "
                                                    "or paste an abstract to summarize…")
                    with gr.Row():
                        run = gr.Button("Run", variant="primary", elem_id="run")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                        route_btn = gr.Button("Route only", elem_id="route")
                    gr.Examples(examples=[[e] for e in examples], inputs=[prompt],
                                label="Examples: one per adapter, then two-skill and everyday prompts")
                with gr.Column(scale=2):
                    with gr.Accordion("Advanced", open=True):
                        top_p = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="top-p (router)", elem_id="top-p")
                        top_k = gr.Number(value=d.top_k, precision=0, minimum=0, maximum=len(names),
                                          label="top-k (0 = no cap)")
                        weighting = gr.Radio(["renorm", "softmax"], value="renorm", label="fusion weighting")
                        temperature = gr.Slider(0.0, 1.5, value=d.temperature, step=0.05, label="temperature (0 = greedy)")
                        max_new_tokens = gr.Slider(1, 512, value=d.max_new_tokens, step=1, label="max new tokens")
                        seed = gr.Number(value=0, precision=0, minimum=0, label="seed (sampling)")
                        n_single = gr.Slider(0, min(MAX_SINGLES, len(names)), value=min(1, len(names)), step=1,
                                             label="single-adapter columns")
            with gr.Row():
                with gr.Column(scale=3, min_width=360):  # narrow screens: the weights wrap below the chart
                    router_plot = gr.Plot(label="Router", elem_id="router-chart")
                with gr.Column(scale=2, min_width=280):
                    weights_html = gr.HTML("<p><i>Type a prompt and press Run (or Route only).</i></p>",
                                           elem_id="weights")
            run_prompt = gr.Markdown("", elem_id="run-prompt")
            last_run = gr.State(None)  # the settings the answers on screen were produced with
            go = gr.Number(0, visible=False)  # Run and Enter bump it; its change event is the run
            with gr.Row(equal_height=True):
                with gr.Column(min_width=COLUMN_MIN):
                    out_base = gr.Textbox(label="Base model", lines=12, elem_id="out-base", interactive=False)
                    t_base = gr.Markdown(elem_classes="col-timing")
                single_boxes, single_cols = [], []
                for i in range(MAX_SINGLES):
                    with gr.Column(visible=i < min(1, len(names)), min_width=COLUMN_MIN) as col:
                        box = gr.Textbox(label="Top single adapter", lines=12, interactive=False,
                                         elem_id="out-single" if i == 0 else f"out-single-{i + 1}",
                                         elem_classes="out-extra")
                        t_box = gr.Markdown(elem_classes="col-timing")
                    single_boxes += [box, t_box]
                    single_cols.append(col)
                with gr.Column(min_width=COLUMN_MIN):
                    out_fused = gr.Textbox(label="DLP fused", lines=12, elem_id="out-fused", interactive=False)
                    t_fused = gr.Markdown(elem_classes="col-timing")
            with gr.Column(elem_id="timing"):
                timing_md = gr.Markdown("")
                timing_plot = gr.Plot(label="Timing")

        with gr.Tab("Manual mix"):
            gr.Markdown("Set the fusion weights by hand (they are normalized to sum to 1) and compare with the base model. "
                        "Weight on **base (no adapter)** scales every adapter's contribution down.")
            with gr.Row():
                with gr.Column(scale=2):
                    m_prompt = gr.Textbox(label="Prompt", lines=3, elem_id="manual-prompt")
                    sliders = [gr.Slider(0, 1, value=0, step=0.05, label="base (no adapter)" if n == "base" else n)
                               for n in mix_names]
                    with gr.Row():
                        m_copy = gr.Button("Start from the router's weights")
                        m_run = gr.Button("Generate with this mix", variant="primary", elem_id="manual-run")
                with gr.Column(scale=3):
                    m_base = gr.Textbox(label="Base model", lines=10, interactive=False)
                    m_t_base = gr.Markdown(elem_classes="col-timing")
                    m_out = gr.Textbox(label="Manual mix", lines=10, interactive=False, elem_id="out-manual")
                    m_t_out = gr.Markdown(elem_classes="col-timing")

        with gr.Tab("Adapters"):
            rows = []
            for a in manifest.adapters:
                info = engine.adapters.get(a.name)
                rows.append([a.name, a.task, info.rank if info else "-", ", ".join(info.targets) if info else "-",
                             f"{info.size_bytes / 1e6:.2f} MB" if info else "-", a.description])
            gr.Dataframe(rows, headers=["name", "task", "rank", "targets", "size", "description"],
                         interactive=False, wrap=True)
            for a in manifest.adapters:
                info = engine.adapters.get(a.name)
                with gr.Accordion(f"Card: {a.name}", open=False):
                    card = (info.folder / "README.md") if info else None
                    gr.Markdown(card.read_text(encoding="utf-8") if card and card.is_file() else "(no card)")

        with gr.Tab("Results"):
            results_file = RESULTS / "results.json"
            table_file = RESULTS / "results.md"
            if results_file.is_file():
                results = json.loads(results_file.read_text())
                gr.Markdown(table_file.read_text(encoding="utf-8") if table_file.is_file() else "")
                gr.Plot(results_chart(results))
                if results.get("two_skill"):
                    gr.Plot(two_skill_chart(results))
            else:
                gr.Markdown("No evaluation yet: run `python -m dlp eval` to create `assets/eval/results.json`.")

        with gr.Tab("How it works"):
            gr.Markdown(METHOD, latex_delimiters=[{"left": "$$", "right": "$$", "display": True}])

        # ---- events ----------------------------------------------------------------------------------
        route_inputs = [prompt, top_p, top_k, weighting]
        outputs = [router_plot, weights_html, out_base, t_base, *single_boxes, *single_cols, out_fused, t_fused, timing_md, timing_plot]
        run_inputs = [*route_inputs, temperature, max_new_tokens, seed, n_single]
        # One run per visitor: Run or Enter first stops the run on screen (its thread ends within a token),
        # then starts the new one; Stop keeps the partial text. The API endpoint raises errors instead.
        run_evt = go.change(run_compare_ui, run_inputs, [*outputs, run_prompt, last_run], api_name=False,
                            show_progress="minimal")
        for trigger in (run.click, prompt.submit):
            trigger(_cancel_run, None, None, cancels=[run_evt], queue=False, api_name=False) \
                .then(lambda n: (n or 0) + 1, go, go, queue=False, api_name=False)
        stop.click(_cancel_run, None, None, cancels=[run_evt], queue=False, api_name=False)
        api_run = gr.Button(visible=False)
        api_run.click(run_compare, run_inputs, outputs, api_name="compare")
        n_single.change(lambda n: [gr.Column(visible=i < int(n)) for i in range(MAX_SINGLES)], n_single, single_cols,
                        api_name=False, show_progress="hidden")
        route_btn.click(route_button, [*route_inputs, last_run], [router_plot, weights_html], api_name=False)
        gr.Button(visible=False).click(route_only, route_inputs, [router_plot, weights_html], api_name="route")
        for control in (top_p, weighting):
            control.change(route_only, [*route_inputs, last_run], [router_plot, weights_html], api_name=False,
                           concurrency_limit=4, show_progress="hidden", trigger_mode="always_last")
        top_k.submit(route_only, [*route_inputs, last_run], [router_plot, weights_html], api_name=False)
        m_copy.click(copy_router_weights, [m_prompt, top_p, top_k, weighting], sliders, api_name=False)
        m_run.click(run_manual, [m_prompt, temperature, max_new_tokens, seed, *sliders],
                    [m_base, m_t_base, m_out, m_t_out], api_name="manual")
    return demo


def launch(engine: Engine, **kwargs):
    """Queue with sane limits, then launch; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured."""
    demo = build_demo(engine)
    demo.queue(default_concurrency_limit=int(os.environ.get("DLP_CONCURRENCY", "2")), max_size=64)
    kwargs.setdefault("theme", gr.themes.Soft(primary_hue="indigo"))
    kwargs.setdefault("css", CSS)
    kwargs.setdefault("show_error", True)
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
