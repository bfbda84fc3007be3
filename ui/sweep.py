"""The Sweep tab: one prompt answered at five mixtures between two adapters (or an adapter and base).

The five rows are one batch, each row carrying its own mixture, so the sweep costs one generate. It
shows what fusion does to an answer more plainly than any single fused column: where the answer stops
being the first adapter's and becomes the second's.
"""

from __future__ import annotations

import gradio as gr

from dlp.charts import sweep_chart
from dlp.engine import Column
from dlp.errors import DLPError
from dlp.explain import likeness, mixtures_between

from .common import cancel_run, on_page, parse_options, session_of, timing_line, user_error

STEPS = 5
EXAMPLES = [  # each shows something: a skill handed over mid-way, and an adapter fading in over base
    ["Translate this review into French and tell me if it is positive or negative: The food was delicious and "
     "the staff were lovely.", "translate_fr", "sentiment"],
    ["Write a Python function that returns the sum of the squares of a list of numbers.", "base", "code"],
    ["Answer briefly: what is the capital of France, and why is it famous?", "base", "translate_fr"],
]


def build(engine, shared, colors: dict[str, str], tab: gr.Tab) -> None:
    """``shared``: the Compare tab's sampling controls; ``tab``: this tab, whose opening refreshes the
    adapter lists (a visitor may have added adapters of their own since the page loaded)."""
    names = ["base", *engine.names]
    first = next((ex for a in engine.manifest.adapters for ex in a.examples[:1]), "")

    def label(a, b, w) -> str:
        return f"{a} {1 - w:.2f} · {b} {w:.2f}"

    def run_sweep(request: gr.Request, prompt, a, b, temperature, max_new_tokens, seed, loop_guard=True, cancel=None):
        try:
            if not a or not b or a == b:
                raise DLPError("Pick two different ends for the sweep", hint="base (no adapter) can be one of them")
            options = parse_options(temperature, max_new_tokens, seed, loop_guard)
            scope = engine.scope(session_of(request))
            steps = mixtures_between(a, b, STEPS)
            columns = [Column(f"w{w:.2f}", label(a, b, w), mix) for w, mix in steps]
            shades = {**colors, **scope.colors}

            def shown(update):
                return [gr.Textbox(value=t, label=c.label) for t, c in zip(update.state.texts, columns)]

            def timing(update) -> str:  # the sweep's own figures: the slowest row's total, every row's tokens
                rows = [update.column_timing(i) for i in range(len(columns))]
                tokens = sum(r["tokens"] for r in rows)
                total = max(r["total_ms"] for r in rows) / 1000
                state = update.state
                stopped = " (stopped)" if any(state.cut_short(i) for i in range(len(columns))) else \
                    " (a row repeating itself was ended)" if any(state.repeating or []) else ""
                return (f"{len(columns)} rows in one batch · {tokens} tokens in {total:.2f} s "
                        f"({tokens / total if total else 0:.1f} tok/s over all rows){stopped}")

            last = None
            for last in engine.stream(prompt, columns, options, every=2, scope=scope, cancel=cancel):
                yield [*shown(last), timing(last), gr.skip()]
            if last is not None:
                texts = last.state.texts
                weights = [w for w, _ in steps]
                chart = sweep_chart(weights, [likeness(t, texts[0]) for t in texts],
                                    [likeness(t, texts[-1]) for t in texts], a, b, shades)
                # the texts once more: the page may coalesce back-to-back updates, and API callers read the last
                yield [*shown(last), timing(last), chart]
        except Exception as exc:  # noqa: BLE001
            raise user_error(exc) from None

    def refresh(request: gr.Request):
        now = ["base", *engine.scope(session_of(request)).names]
        return gr.Dropdown(choices=now), gr.Dropdown(choices=now)

    gr.Markdown("One prompt, five mixtures from one adapter to another: all weight on the first, 0.75 / 0.25, "
                "half and half, 0.25 / 0.75, all on the second. **base** (no adapter) can be either end, to "
                "watch an adapter fade in. The chart shows how many words each answer shares with the two ends.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, value=first, scale=3, elem_id="sweep-prompt")
        with gr.Column(scale=2, min_width=260):
            a = gr.Dropdown(names, value="base", label="From", elem_id="sweep-a")
            b = gr.Dropdown(names, value=names[1] if len(names) > 1 else "base", label="To", elem_id="sweep-b")
            with gr.Row():
                run = gr.Button("Sweep", variant="primary", elem_id="sweep-run")
                stop = gr.Button("Stop", elem_id="sweep-stop")
    usable = [e for e in EXAMPLES if {e[1], e[2]} <= set(names)]
    if usable:
        gr.Examples(usable, [prompt, a, b], label="Try these sweeps")
    with gr.Row(equal_height=True):
        boxes = [gr.Textbox(label=label("A", "B", i / (STEPS - 1)), lines=10, max_lines=10, interactive=False, min_width=180,
                            elem_classes="out-extra") for i in range(STEPS)]
    timing = gr.Markdown(elem_classes="col-timing")
    chart = gr.Plot(label="Sweep", elem_id="sweep-chart")
    inputs = [prompt, a, b, shared.temperature, shared.max_new_tokens, shared.seed, shared.loop_guard]
    run.click(on_page(run_sweep, STEPS + 2), inputs, [*boxes, timing, chart], api_name=False)
    stop.click(cancel_run, None, None, queue=False, api_name=False)
    gr.Button(visible=False).click(run_sweep, inputs, [*boxes, timing, chart], api_name="sweep")
    tab.select(refresh, None, [a, b], api_name=False, show_progress="hidden")
