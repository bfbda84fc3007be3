"""The Compare tab: route once, then base | single adapter(s) | DLP fused streaming side by side, with
what changed, why the router chose it, and a run record to download."""

from __future__ import annotations

import atexit
import datetime
import functools
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from dlp import compute
from dlp.charts import gate_chart, router_chart, timing_chart
from dlp.errors import DLPError
from dlp.routing import MAX_PROMPT_CHARS
from dlp.explain import token_gain, top_words, word_diff, word_occlusion
from dlp.fusion_methods import LABELS as METHOD_LABELS

from .common import (armed_run, cancel_run, end_run, message, new_run, parse_options, parse_top_k, run_line,
                     session_of, shade_scale, shaded_html, stale_note, stopped_mark, timing_line, timing_table, user_error,
                     weights_html)
from .gate_view import gate_html

MAX_SINGLES = 3
UPDATE_EVERY_S = 0.25  # the streamed columns refresh at most this often
COLUMN_MIN = 210  # px per answer column: base, three singles and fused fit in one row from ~1200 px
# Bring the answers into view after Run when they are not (a phone, a scrolled page); ``n`` passes through.
SCROLL_TO_ANSWERS = """(n) => { setTimeout(() => { const el = document.getElementById('answers');
  const head = document.getElementById('run-prompt'); if (!el || !head) return;
  const r = el.getBoundingClientRect();
  if (r.top < 0 || r.top + 240 > window.innerHeight) head.scrollIntoView({behavior: 'smooth', block: 'start'});
}, 250); return n; }"""
PRESENTER = "(on) => { document.body.classList.toggle('presenter', on); }"
SHARE_KEYS = ("prompt", "top_p", "top_k", "weighting", "temperature", "max_new_tokens", "seed", "n_single", "fusion",
              "loop_guard", "min_weight")
SHARE_LINK = f"""(...v) => {{ const keys = {list(SHARE_KEYS)}; const u = new URL(window.location.href); u.search = '';
  keys.forEach((k, i) => u.searchParams.set(k, typeof v[i] === 'boolean' ? (v[i] ? '1' : '0') : v[i]));
  u.searchParams.set('run', '1'); return u.toString(); }}"""
_EXPORTS = Path(tempfile.mkdtemp(prefix="dlp-runs-"))
atexit.register(shutil.rmtree, _EXPORTS, True)
EXPORT_TTL = 3600  # s: Gradio serves its own cached copy (pruned by the page's delete_cache) after that


def export_path() -> Path:
    """A new file for one run's record; records older than ``EXPORT_TTL`` go first, so a Space that runs for
    weeks does not fill its disk one download at a time."""
    cutoff = time.time() - EXPORT_TTL
    for old in _EXPORTS.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # another visitor's run pruned it first
    return Path(tempfile.mkdtemp(dir=_EXPORTS)) / "dlp-run.json"


def _file_id(path: Path) -> str:
    """A short hash of the file, read once per version of it (adapters kept for everyone arrive later)."""
    try:
        return _hash(str(path), path.stat().st_mtime_ns)
    except OSError:
        return "?"


@functools.lru_cache(maxsize=256)
def _hash(path: str, mtime_ns: int) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def split_columns(cols: list[dict]) -> tuple[dict, list[dict], dict, dict | None]:
    """(base, singles, DLP fused, the second fused column or None) from a compare update's columns."""
    singles = [c for c in cols if c["key"].startswith("single:")]
    fused = next(c for c in cols if c["key"] == "fused")
    learned = next((c for c in cols if c["key"].startswith("fused:")), None)
    return cols[0], singles, fused, learned


def build(engine, colors: dict[str, str], bench_ratio: float | None, demo: gr.Blocks,
          weak: list[str] | None = None) -> SimpleNamespace:
    """Lay out the tab and wire its events; returns the shared controls (the other tabs read them).
    ``weak``: adapters that do not beat the base model on held-out data (the Results tab), named under
    the examples so a presenter is not surprised."""
    manifest, d = engine.manifest, engine.manifest.defaults
    names = engine.names
    examples = [ex for a in manifest.adapters for ex in a.examples[:1]] + list(manifest.mixed_examples)

    def explain_route(route, scope) -> tuple[str, str]:
        kept = [n for n in route.selected if n != "base"] or list(route.selected)
        routing = scope.routing
        names_now = routing.names
        scores = word_occlusion(lambda t: dict(zip(names_now, routing.probs(t)[0].tolist())), route.prompt, kept)
        pairs = [(w + " ", s) for w, s, _ in scores]
        best = ", ".join(f"**{w}** → {a} ({s:+.2f})" for w, s, a in top_words(scores))
        return shaded_html(pairs, max((abs(s) for _, s in pairs), default=0.0)), (
            f"Each word is shaded by how much the router's probability for a kept adapter "
            f"(**{', '.join(kept)}**) falls when the word is removed. Most telling: {best or 'no single word stands out'}.")

    # ---- handlers ------------------------------------------------------------------------------
    def route_only(prompt, top_p, top_k, weighting, last_run=None, min_weight=0.0, request: gr.Request = None):
        """Routing only (no generation), so moving top-p updates the chart at once."""
        if not (prompt or "").strip():
            return gr.skip(), gr.skip()
        try:
            scope = engine.scope(session_of(request))
            route = engine.route(prompt, float(top_p), parse_top_k(top_k), weighting, scope, float(min_weight or 0))
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            return gr.skip(), gr.skip()
        note = stale_note(prompt, top_p, top_k, weighting, last_run)
        shades = {**colors, **scope.colors}
        return router_chart(route.probs, route.selected, shades, route.top_p), weights_html(route, shades) + note

    def route_button(prompt, top_p, top_k, weighting, last_run=None, min_weight=0.0, request: gr.Request = None):
        if not (prompt or "").strip():
            gr.Warning(message(DLPError("The prompt is empty", hint="type a question, or pick one of the examples")))
            return gr.skip(), gr.skip()
        return route_only(prompt, top_p, top_k, weighting, last_run, min_weight, request)

    def compare_stream(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single, scope,
                       cancel=None, fusion="renorm", loop_guard=True, chosen=None, min_weight=0.0):
        """The Compare outputs per streamed update (chart, weights, base, 3 singles, fused, learned, timing)."""
        options = parse_options(temperature, max_new_tokens, seed, loop_guard)
        if chosen and len(chosen) > MAX_SINGLES:
            raise DLPError(f"At most {MAX_SINGLES} single-adapter columns fit beside the others; "
                           f"{len(chosen)} were picked")
        shades = {**colors, **scope.colors}
        first, shown = True, 0.0
        for update in engine.compare(prompt, float(top_p), parse_top_k(top_k), int(n_single), options, weighting,
                                     every=2, cancel=cancel, scope=scope, fusion=fusion or "renorm",
                                     singles=list(chosen or []) or None, min_weight=float(min_weight or 0)):
            cols = update.as_dict()["columns"]
            base, singles, fused, learned = split_columns(cols)
            done = update.state.finished
            if not (first or done or update.state.waiting) and time.perf_counter() - shown < UPDATE_EVERY_S:
                continue  # each update is work for the server beside the decode on a few cores: ~4 a second
            shown = time.perf_counter()

            def line(c):
                if update.state.waiting:
                    return "waiting for the run ahead of yours (this machine decodes one run at a time)"
                return timing_line(c["timing"]) + stopped_mark(update, cols.index(c))

            show = first or done  # the chart on the first and the last update (API callers read the last)
            chart = router_chart(update.route.probs, update.route.selected, shades, update.route.top_p) \
                if show else gr.skip()
            boxes = []
            for i in range(MAX_SINGLES):
                boxes += ([gr.Textbox(value=singles[i]["text"], label=singles[i]["label"]),
                           line(singles[i])] if i < len(singles) else ["", ""])
            visible = [gr.Column(visible=i < len(singles)) for i in range(MAX_SINGLES)]
            # the last run's timing chart describes other columns: cleared at once, drawn again when done
            timing = timing_chart(cols, bench_ratio) if done else None if first else gr.skip()
            first = False
            yield [chart, weights_html(update.route, shades) if show else gr.skip(), base["text"],
                   line(base), *boxes, *visible,
                   gr.Textbox(value=fused["text"], label=fused["label"]), line(fused),
                   gr.Column(visible=learned is not None),
                   gr.Textbox(value=learned["text"], label=learned["label"]) if learned else "",
                   line(learned) if learned else "",
                   timing_table(cols), timing], update

    def run_compare(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single,
                    fusion="renorm", loop_guard=True, chosen=None, min_weight=0.0, request: gr.Request = None):
        """The API endpoint: errors are raised, as API callers expect."""
        try:
            scope = engine.scope(session_of(request))
            for outs, _ in compare_stream(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single,
                                          scope, fusion=fusion, loop_guard=loop_guard, chosen=chosen,
                                          min_weight=min_weight):
                yield outs
        except Exception as exc:  # noqa: BLE001
            raise user_error(exc) from None

    def versions() -> dict:
        return {"base": f"{manifest.base_name} ({engine.base.source.describe()})",
                "adapters": {n: _file_id(a.folder / "adapter_model.safetensors")
                             for n, a in list(engine.adapters.items())},
                "router": _file_id(manifest.router_path / "router.safetensors") if manifest.router_path else None}

    def insights(update, settings, scope) -> list:
        """After a run: word diffs, the token gate's panel and the run record (the fused answer's shading by what
        the adapters added comes after, from :func:`gain_views`)."""
        cols = update.as_dict()["columns"]
        base, singles, fused, learned = split_columns(cols)
        diffs = []
        for i in range(MAX_SINGLES):
            if i < len(singles):
                diffs.append(gr.HighlightedText(value=word_diff(base["text"], singles[i]["text"]), visible=True,
                                                label=f"{singles[i]['label']} vs base model"))
            else:
                diffs.append(gr.HighlightedText(value=None, visible=False))
        ref = singles[0] if singles else base
        diffs.append(gr.HighlightedText(value=word_diff(ref["text"], fused["text"]), visible=True,
                                        label=f"DLP fused vs {ref['label']}"))
        diffs.append(gr.HighlightedText(value=word_diff(fused["text"], learned["text"]), visible=True,
                                        label=f"{learned['label']} vs DLP fused") if learned else
                     gr.HighlightedText(value=None, visible=False))
        names, steps = update.gate_trace(cols.index(learned)) if learned else ([], [])
        shown = {key: name for name, key in scope.keys.items()}  # a visitor's LoRA runs under its session key
        names = [shown.get(n, n) for n in names]
        if steps:
            ids = update.state.token_ids[cols.index(learned)][: len(steps)]
            tokens = [engine.tokenizer.decode([t]) for t in ids]
            shades = {**colors, **scope.colors}
            gate_views = [gr.Accordion(visible=True), gate_html(tokens, names, steps, shades),
                          gate_chart(tokens, names, steps, shades)]
        else:
            gate_views = [gr.Accordion(visible=False), "", None]
        adapters = {n: w for n, w in fused["mixture"].items() if n != "base"}
        if adapters and fused["text"].strip():  # filled in by gain_views, once the compute thread is free
            gain_view, gain_note = gr.HTML(value="", visible=False), "Shading the fused answer by what the adapters added…"
        else:
            gain_view = gr.HTML(value="", visible=False)
            gain_note = ("The router kept only **base**: the fused answer is the base model's own." if not adapters
                         else "The fused answer is empty (stopped before its first word): nothing to shade.")
        record = {
            "prompt": update.route.prompt, "settings": {k: v for k, v in settings.items() if k != "prompt"},
            "route": update.route.as_dict(),
            "columns": [{k: c[k] for k in ("key", "label", "mixture", "text", "timing")} for c in cols],
            "versions": {**versions(), **({"visitor_adapters": list(scope.mine)} if scope.mine else {})},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        path = export_path()
        path.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
        return [*diffs, gain_note, gain_view, gr.DownloadButton(value=str(path), visible=True), *gate_views]

    def gain_views(update, scope) -> list | None:
        """The fused answer shaded token by token by its gain over the base model (a forward pass: it waits for
        the compute thread, so the rest of the insights are shown first)."""
        fused = split_columns(update.as_dict()["columns"])[2]
        if not any(n != "base" for n in fused["mixture"]) or not fused["text"].strip():
            return None
        gains = token_gain(engine, update.route.prompt, fused["text"], fused["mixture"], scope)
        return [("Each token of the fused answer, shaded by how much more likely the fused model made it than the "
                 "base model did: the log-probability gain, fused minus base, from one teacher-forced pass of both "
                 "(hover a token for its value)."),
                gr.HTML(value=shaded_html(gains, 3.0) + shade_scale(3.0, "the base model preferred it",
                                                                    "the adapters wrote it"), visible=True)]

    def run_compare_ui(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single, fusion,
                       loop_guard, chosen, min_weight, request: gr.Request):
        """The page: one run per visitor (a new Run stops the old one), errors as one message with the
        outputs left as they were, and the run's prompt and settings shown above its answers. Stop only
        raises the run's flag: the run ends within a token and finishes like any run, marked "(stopped)"."""
        cancel = armed_run(request)
        settings = {"prompt": (prompt or "").strip(), "top_p": top_p, "top_k": top_k, "weighting": weighting,
                    "temperature": temperature, "seed": seed, "max_new_tokens": max_new_tokens, "fusion": fusion,
                    "loop_guard": loop_guard is not False, "single_columns": list(chosen or []) or "router's kept set",
                    "min_weight": float(min_weight or 0)}
        skip_extra = [gr.skip()] * (len(extra_outputs))
        # The last run's diffs, shading and download describe other answers: gone once the new run shows.
        cleared = [*[gr.HighlightedText(value=None, visible=False)] * len(diffs), "",
                   gr.HTML(value="", visible=False), gr.DownloadButton(visible=False), gr.Accordion(visible=False),
                   "", None]
        if compute.busy():
            gr.Info("Another run is decoding on this machine; yours starts as soon as it ends (runs take turns).")
        try:
            scope = engine.scope(session_of(request))
            first, last, last_outs = True, None, None
            for outs, update in compare_stream(prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed,
                                               n_single, scope, cancel, fusion, loop_guard, chosen, min_weight):
                if first:  # "why this route" waits for the end: its router calls would slow the decode
                    settings["top_k"] = update.route.top_k
                    yield [*outs, run_line(settings["prompt"], settings), settings, "",
                           "Shown when the run ends.", *cleared]
                else:
                    yield [*outs, gr.skip(), gr.skip(), gr.skip(), gr.skip(), *skip_extra]
                first, last, last_outs = False, update, outs
            if last is not None:
                # The final state once more with the insights: updates that arrive back to back can be
                # coalesced by the page, and the last one must carry the charts.
                final = [*last_outs, gr.skip(), gr.skip(), *explain_route(last.route, scope),
                         *insights(last, settings, scope)]
                yield final
                gain = gain_views(last, scope)
                if gain is not None:  # everything once more: the page may coalesce the two last updates
                    at = len(outputs) + 4 + len(diffs)  # gain note and view follow the diffs in extra_outputs
                    final[at : at + 2] = gain
                    yield final
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            yield [gr.skip()] * (len(outputs) + 4 + len(extra_outputs))
        finally:
            end_run(request, cancel)

    def prefill(request: gr.Request):
        """``?prompt=...&top_p=...&run=1`` in the page's address fills the form (the Share link writes every
        setting) and, with ``run=1``, runs it. A value that does not parse is left at its default."""
        q = dict(request.query_params) if request else {}

        def number(key, kind, low, high):
            try:
                v = kind(q[key])
            except (KeyError, ValueError):
                return gr.skip()
            return v if low <= v <= high else gr.skip()

        def choice(key, options):
            return q[key] if q.get(key) in options else gr.skip()

        return [q.get("prompt") or gr.skip(), number("top_p", float, 0.05, 1.0), number("top_k", int, 0, 64),
                choice("weighting", ("renorm", "softmax")), number("temperature", float, 0.0, 1.5),
                number("max_new_tokens", int, 1, 512), number("seed", int, 0, 2**31 - 1),
                number("n_single", int, 0, min(MAX_SINGLES, len(names))), choice("fusion", methods),
                {"1": True, "0": False}.get(q.get("loop_guard"), gr.skip()), number("min_weight", float, 0.0, 0.5),
                q.get("run") == "1" and bool(q.get("prompt"))]

    # ---- layout --------------------------------------------------------------------------------
    # Answers first: the prompt, then the answers, then why (router, diffs, gate, timing). The examples
    # fold away once Run is pressed and the settings a presenter rarely touches sit in a closed panel.
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                info=f"Up to {d.max_prompt_tokens:,} tokens (about {3 * d.max_prompt_tokens:,} "
                                     f"characters of English; over {MAX_PROMPT_CHARS:,} characters is refused before "
                                     f"counting); longer prompts are refused, never cut.",
                                placeholder="Ask a math question, ask for a Python function, a French translation, "
                                            "a review's sentiment, a science quiz answer, or paste a passage or an "
                                            "abstract… or just say hello.")
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="run")
                stop = gr.Button("Stop", elem_id="stop")
                route_btn = gr.Button("Route only", elem_id="route")
            with gr.Accordion("Examples: one per adapter, then two-skill and everyday prompts", open=True,
                              elem_id="examples") as examples_box:
                gr.Examples(examples=[[e] for e in examples], inputs=[prompt], label=None, examples_per_page=6)
                caveat = (" On held-out data " + " and ".join(f"**{w}**" for w in weak) + " did not beat the base "
                          "model (Results tab); the examples shown are ones they get right." if weak else "")
                gr.Markdown(f"The base model, {manifest.base_name}, is small (135M parameters): the adapters mostly "
                            f"teach it a task's format and phrasing.{caveat} The point of this page is to watch "
                            f"routing and fusion at work.", elem_classes="col-timing")
        with gr.Column(scale=2):
            top_p = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="top-p (router)", elem_id="top-p")
            min_weight = gr.Slider(0.0, 0.5, value=0.1, step=0.05, label="minimum fusion weight", elem_id="min-weight",
                                   info="a kept adapter under this weight is left out (0 = the paper's plain top-p)")
            methods = ["renorm", "sum", *engine.learned.available()]
            fusion = gr.Radio([(METHOD_LABELS[m], m) for m in methods], elem_id="fusion",
                              value="token" if "token" in methods else "renorm", label="second fused column",
                              info="beside DLP's renorm column, the same kept adapters fused another way: sum "
                                   "(each at weight 1), layer-wise (a learned weight per layer) or a token gate "
                                   "(learned, re-weighs the adapters at every token; see the Results tab)")
            with gr.Accordion("More settings", open=False, elem_id="settings"):
                top_k = gr.Number(value=d.top_k, precision=0, label="top-k (0 = no cap)",
                                  info="keep at most k adapters; a k above the number of labels keeps them all")
                weighting = gr.Radio(["renorm", "softmax"], value="renorm", label="fusion weighting",
                                     info="renorm: p / sum (the paper) · softmax: the original code")
                temperature = gr.Slider(0.0, 1.5, value=d.temperature, step=0.05, label="temperature (0 = greedy)")
                max_new_tokens = gr.Slider(1, 512, value=d.max_new_tokens, step=1, label="max new tokens")
                loop_guard = gr.Checkbox(value=True, label="loop guard", elem_id="loop-guard",
                                         info="end a column once the same 4-64 tokens come three times in a row, "
                                              "marked \"(stopped: repeating)\"; applies to every column and tab")
                seed = gr.Number(value=0, precision=0, minimum=0, label="seed (every column samples alike)")
                n_single = gr.Slider(0, min(MAX_SINGLES, len(names)), value=min(2, len(names)), step=1,
                                     label="single-adapter columns (at most, from the kept set)")
                chosen = gr.Dropdown(names, value=[], multiselect=True, max_choices=MAX_SINGLES,
                                     label="single columns for these adapters", elem_id="chosen",
                                     info="empty: the adapters the router kept; pick up to three to compare any "
                                          "adapter, kept or not")
            with gr.Row():
                presenter = gr.Checkbox(value=False, label="Presenter mode: large text, settings hidden",
                                        elem_id="presenter", scale=2)
                share = gr.Button("Share link", elem_id="share", size="sm", scale=1)
            share_link = gr.Textbox(label="Link to this prompt and these settings (opens and runs)", buttons=["copy"],
                                    elem_id="share-link", visible=False, interactive=False, max_lines=1)
    run_prompt = gr.Markdown("", elem_id="run-prompt")
    last_run = gr.State(None)  # the settings the answers on screen were produced with
    go = gr.Number(0, visible=False)  # Run bumps it; its change event is the run
    with gr.Row(equal_height=True, elem_id="answers"):
        with gr.Column(min_width=COLUMN_MIN):
            out_base = gr.Textbox(label="Base model", lines=10, elem_id="out-base", interactive=False)
            t_base = gr.Markdown(elem_classes="col-timing")
        single_boxes, single_cols = [], []
        for i in range(MAX_SINGLES):
            with gr.Column(visible=i < min(1, len(names)), min_width=COLUMN_MIN) as col:
                box = gr.Textbox(label="Top single adapter", lines=10, interactive=False,
                                 elem_id="out-single" if i == 0 else f"out-single-{i + 1}", elem_classes="out-extra")
                single_boxes += [box, gr.Markdown(elem_classes="col-timing")]
            single_cols.append(col)
        with gr.Column(min_width=COLUMN_MIN):
            out_fused = gr.Textbox(label="DLP fused", lines=10, elem_id="out-fused", interactive=False)
            t_fused = gr.Markdown(elem_classes="col-timing")
        with gr.Column(min_width=COLUMN_MIN, visible=fusion.value != "renorm") as learned_col:
            out_learned = gr.Textbox(label="Second fused column", lines=10, elem_id="out-learned", interactive=False)
            t_learned = gr.Markdown(elem_classes="col-timing")
    with gr.Row():
        with gr.Column(scale=3, min_width=360):  # narrow screens: the weights wrap below the chart
            router_plot = gr.Plot(label="Router", elem_id="router-chart")
        with gr.Column(scale=2, min_width=280):
            weights = gr.HTML("<p><i>Type a prompt and press Run (or Route only).</i></p>", elem_id="weights")
    with gr.Accordion("Why this route", open=False, elem_id="router-why"):
        why = gr.HTML("")
        why_md = gr.Markdown("Run or route a prompt to see which words decided the route.")
    with gr.Accordion("What changed", open=True, elem_id="diff"):
        gr.Markdown("Green: words a column added against its reference; grey: words it dropped.")
        diff_map = {"+": "#b7f0c0", "-": "#dcdcdc"}  # red is kept for one meaning: the adapters wrote it
        diffs = [gr.HighlightedText(visible=False, color_map=diff_map, show_legend=False) for _ in range(MAX_SINGLES + 2)]
        gain_md = gr.Markdown("")
        gain = gr.HTML("", visible=False, elem_id="token-gain")
        export = gr.DownloadButton("Download this run (JSON)", visible=False, elem_id="export")
    with gr.Accordion("Token gate: which adapter wrote which words", open=True, visible=False,
                      elem_id="gate") as gate_box:
        gate_view = gr.HTML("")
        gate_plot = gr.Plot(label="Token gate")
    with gr.Column(elem_id="timing"):
        timing_md = gr.Markdown("")
        timing_plot = gr.Plot(label="Timing")

    # ---- events --------------------------------------------------------------------------------
    route_inputs = [prompt, top_p, top_k, weighting]
    outputs = [router_plot, weights, out_base, t_base, *single_boxes, *single_cols, out_fused, t_fused, learned_col,
               out_learned, t_learned, timing_md, timing_plot]
    extra_outputs = [*diffs, gain_md, gain, export, gate_box, gate_view, gate_plot]
    run_inputs = [*route_inputs, temperature, max_new_tokens, seed, n_single, fusion, loop_guard, chosen, min_weight]
    # One run per visitor: Run raises the flag of the run on screen (its thread ends within a token) and arms
    # a new one; Stop raises the flag and the run ends cleanly, partial text, diffs and record included.
    # The new run waits (always_last) for the old one. Gradio's own `cancels` is not used: it kills the
    # handler mid-update (red "Error" badges on every output) and can land on the next run instead.
    go.change(run_compare_ui, run_inputs, [*outputs, run_prompt, last_run, why, why_md, *extra_outputs],
                        api_name=False, show_progress="minimal", trigger_mode="always_last")
    def arm(request: gr.Request):
        new_run(request)
        return gr.Accordion(open=False)  # the examples fold away: the answers move up

    for trigger in (run.click, prompt.submit):
        trigger(arm, None, examples_box, queue=False, api_name=False) \
            .then(lambda n: (n or 0) + 1, go, go, queue=False, api_name=False, js=SCROLL_TO_ANSWERS)
    presenter.change(None, presenter, None, js=PRESENTER, api_name=False)
    stop.click(cancel_run, None, None, queue=False, api_name=False)
    gr.Button(visible=False).click(run_compare, run_inputs, outputs, api_name="compare")
    gr.Button(visible=False).click(route_only, route_inputs, [router_plot, weights], api_name="route")
    n_single.change(lambda n: [gr.Column(visible=i < int(n)) for i in range(MAX_SINGLES)], n_single, single_cols,
                    api_name=False, show_progress="hidden")
    fusion.change(lambda f: gr.Column(visible=f != "renorm"), fusion, learned_col, api_name=False,
                  show_progress="hidden")
    route_btn.click(route_button, [*route_inputs, last_run, min_weight], [router_plot, weights], api_name=False)
    for control in (top_p, weighting, min_weight):
        control.change(route_only, [*route_inputs, last_run, min_weight], [router_plot, weights], api_name=False,
                       concurrency_limit=4, show_progress="hidden", trigger_mode="always_last")
    top_k.submit(route_only, [*route_inputs, last_run, min_weight], [router_plot, weights], api_name=False)
    shared_inputs = [prompt, top_p, top_k, weighting, temperature, max_new_tokens, seed, n_single, fusion, loop_guard,
                     min_weight]
    run_on_open = gr.State(False)
    demo.load(prefill, None, [*shared_inputs, run_on_open], api_name=False) \
        .then(lambda n, go_now: (n or 0) + 1 if go_now else gr.skip(), [go, run_on_open], go, api_name=False)
    share.click(None, shared_inputs, share_link, js=SHARE_LINK, api_name=False) \
        .then(lambda: gr.Textbox(visible=True), None, share_link, queue=False, api_name=False)
    return SimpleNamespace(prompt=prompt, top_p=top_p, top_k=top_k, weighting=weighting, temperature=temperature,
                           max_new_tokens=max_new_tokens, seed=seed, loop_guard=loop_guard)
