"""Helpers every tab shares: run bookkeeping per visitor, messages, and small HTML/Markdown renderings."""

from __future__ import annotations

import html
import json
import threading
from pathlib import Path

import gradio as gr

from dlp.engine import RouteResult
from dlp.errors import DLPError
from dlp.generation import GenerationOptions

RUNS: dict[str, threading.Event] = {}  # session -> the cancel flag of its run on screen (one run per visitor)


def session_of(request: gr.Request | None) -> str:
    """The visitor's session (each browser tab, and each gradio_client Client, has its own)."""
    return getattr(request, "session_hash", None) or "anonymous"


def new_run(request: gr.Request | None) -> threading.Event:
    """A fresh cancel flag for this visitor's run; a run still going for the same visitor is stopped."""
    key = session_of(request)
    old = RUNS.get(key)
    if old is not None:
        old.set()
    RUNS[key] = threading.Event()
    return RUNS[key]


def armed_run(request: gr.Request | None) -> threading.Event:
    """The flag that pressing Run made for this visitor (:func:`new_run` at the click, so a Stop pressed while
    the run still waits in the queue stops it too); a fresh one for a caller that did not arm one."""
    return RUNS.get(session_of(request)) or new_run(request)


def end_run(request: gr.Request | None, event: threading.Event) -> None:
    """Forget a finished run, unless a newer run of the same visitor has replaced it."""
    key = session_of(request)
    if RUNS.get(key) is event:
        del RUNS[key]


def cancel_run(request: gr.Request = None) -> None:
    """Stop: the decode ends within a token and the partial text stays on screen."""
    event = RUNS.get(session_of(request))
    if event is not None:
        event.set()


def message(exc: Exception) -> str:
    if isinstance(exc, DLPError):
        return str(exc)
    if isinstance(exc, gr.Error):  # already worded for the visitor (a handler re-raised it)
        return str(getattr(exc, "message", exc))
    return f"Something went wrong ({type(exc).__name__}: {exc}). Your inputs are kept; try again."


def run_line(prompt: str, settings: dict) -> str:
    text = " ".join(prompt.split())
    text = text if len(text) <= 160 else text[:159] + "…"
    parts = [f"top-p {settings['top_p']:.2f}"]
    if settings["top_k"]:
        parts.append(f"top-k {settings['top_k']}")
    if settings.get("min_weight"):
        parts.append(f"min weight {settings['min_weight']:.2f}")
    if settings.get("loop_guard") is False:
        parts.append("no loop guard")
    parts += [settings["weighting"], f"temperature {settings['temperature']:.2f}", f"seed {settings['seed']}",
              f"max {settings['max_new_tokens']} tokens"]
    return f"**On screen:** “{html.escape(text)}” · " + " · ".join(parts)


def stale_note(prompt: str, top_p, top_k, weighting, last_run: dict | None) -> str:
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


def weights_html(route: RouteResult, colors: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><td><span style='color:{colors.get(n, '#888')}'>&#9632;</span> "
        f"{html.escape(n) if n != 'base' else 'base (no adapter)'}</td>"
        f"<td>{route.probs[n]:.3f}</td><td><b>{w:.3f}</b></td>"
        f"<td style='min-width:70px'><div style='background:{colors.get(n, '#888')};height:10px;"
        f"width:{min(100, int(w * 100))}%'></div></td></tr>"
        for n, w in route.selected.items()
    )
    floor = f", min weight {route.min_weight:.2f}" if route.min_weight else ""
    dropped = (f"<p class='col-timing'>Kept by top-p but under the minimum weight, so left out: "
               f"{', '.join(html.escape(n) for n in route.dropped)} (set the minimum to 0 for the paper's plain "
               f"top-p).</p>" if route.dropped else "")
    two = [n for n in route.selected if n != "base"]
    if len(two) >= 2:
        dropped += (f"<p class='col-timing'>{len(two)} skills kept. DLP gives each adapter one weight for the whole "
                    "answer; on a request that needs both, that often hands the answer to one of them or blends them "
                    "into neither. The <i>token gate</i> (second fused column) re-weighs them at every token; the "
                    "Results tab measures both.</p>")
    return (f"<p><b>Fusion weights as applied</b> (top-p {route.top_p:.2f}"
            f"{f', top-k {route.top_k}' if route.top_k else ''}{floor}, {route.mode}) · router {route.router_ms:.2f} ms</p>"
            f"<table class='weights-table'><tr><th>adapter</th><th>p</th><th>weight</th><th></th></tr>{rows}</table>"
            + dropped)


def _rate(t: dict) -> str:
    """A one-token answer ("negative") has no decode phase: no rate rather than a misleading 0.0."""
    return f"{t['tokens_per_s']:.1f}" if t["tokens"] > 1 else "–"


def timing_line(t: dict) -> str:
    count = f"{t['tokens']} token" + ("" if t["tokens"] == 1 else "s")
    return (f"first token {t['ttft_ms']:.0f} ms · {_rate(t)} tok/s · {count} · "
            f"total {t['total_ms'] / 1000:.2f} s")


def timing_table(columns: list[dict]) -> str:
    head = "| column | router ms | set-up ms | prefill ms | decode tok/s | tokens | total ms |\n|---|---|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {c['label']} | {c['timing']['router_ms']:.2f} | {c['timing']['setup_ms']:.2f} | {c['timing']['prefill_ms']:.0f} | "
        f"{_rate(c['timing'])} | {c['timing']['tokens']} | {c['timing']['total_ms']:.0f} |" for c in columns)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def user_error(exc: Exception) -> gr.Error:
    return gr.Error(message(exc))


def on_page(handler, n_outputs: int):
    """The page's twin of an API generator ``handler(request, *inputs)``: one run per visitor that Stop
    ends cleanly (the flag is passed as ``cancel``), and an error as one message with every output left as
    it was, never an error badge on each box. The API endpoint keeps raising, as API callers expect."""

    def run(request: gr.Request, *inputs):
        cancel = new_run(request)
        try:
            yield from handler(request, *inputs, cancel=cancel)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            yield [gr.skip()] * n_outputs
        finally:
            end_run(request, cancel)

    return run


def stopped_mark(update, i: int) -> str:
    """The mark after row ``i``'s timing line: "(stopped)" if Stop cut it short (a row that had already
    ended keeps its own line), "(stopped: repeating)" if the loop guard ended it, "(cut at the length limit)"
    if it reached max new tokens mid-answer."""
    state = update.state
    if state.repeating and state.repeating[i]:
        return " (stopped: repeating)"
    if state.cut_short(i):
        return " (stopped)"
    if state.finished and not state.cancelled and not state.error and state.eos is not None and not state.eos[i]:
        return " (cut at the length limit)"
    return ""


def parse_options(temperature, max_new_tokens, seed, loop_guard=True) -> GenerationOptions:
    try:
        return GenerationOptions(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                                 seed=int(seed or 0), loop_guard=loop_guard is not False)
    except (TypeError, ValueError):
        raise DLPError("max new tokens and seed must be whole numbers, temperature a number") from None


def parse_top_k(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise DLPError(f"top-k must be a whole number, got {value!r}") from None


def shaded_html(pairs: list[tuple[str, float]], cap: float, elem_class: str = "shaded") -> str:
    """Text as inline spans, red where the score is positive and blue where negative, |score| / cap as the
    strength; the exact value is in each span's tooltip. Whitespace is kept, so it reads as prose."""
    spans = []
    for text, score in pairs:
        a = min(1.0, abs(score) / cap) * 0.75 if cap > 0 else 0.0
        rgb = "220,60,60" if score > 0 else "60,110,220"
        spans.append(f"<span title='{score:+.3f}' style='background:rgba({rgb},{a:.2f})'>{html.escape(text)}</span>")
    return f"<div class='{elem_class}'>{''.join(spans)}</div>"


def shade_scale(cap: float, low: str, high: str) -> str:
    """The legend of :func:`shaded_html`: from full blue (-cap) through white to full red (+cap)."""
    stops = "rgba(60,110,220,0.75), rgba(255,255,255,0), rgba(220,60,60,0.75)"
    return (f"<div class='shade-scale'><span>{html.escape(low)} (−{cap:g})</span>"
            f"<span class='bar' style='background:linear-gradient(to right,{stops})'></span>"
            f"<span>{html.escape(high)} (+{cap:g})</span></div>")
