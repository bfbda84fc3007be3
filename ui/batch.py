"""The Batch tab: up to 50 prompts through the base model, the top kept adapter and DLP's fusion, as one
table (right or wrong where an expected answer is given), with a progress bar, Stop and downloads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from dlp import batch

from .common import cancel_run, end_run, message, new_run, parse_options, session_of

EXAMPLE = """What is 7 times 8?
Translate to French: Where is the train station?
Is this review positive or negative? The screen cracked on the first day.
Write a Python function that reverses a string.
hello, how are you today?"""
HEADERS = ["#", "prompt", "route", "base", "single", "DLP fused"]


def _cell(row: batch.BatchRow, column: str) -> str:
    text = " ".join(row.answers.get(column, "").split())
    mark = {True: "✓ ", False: "✗ ", None: ""}[row.right(column)]
    if column not in row.answers:
        return "…" if not row.answers else "—"  # not answered yet, or no such column for this prompt
    return mark + (text[:240] + "…" if len(text) > 240 else text)


def _frame(table: list[batch.BatchRow]) -> list[list]:
    return [[i + 1, r.prompt[:160], " + ".join(f"{n} {w:.2f}" for n, w in r.route.items()),
             *[_cell(r, c) for c in batch.COLUMNS]] for i, r in enumerate(table)]


def _summary(table: list[batch.BatchRow], stopped: bool, running: bool = False) -> str:
    scored = [r for r in table if r.expected]
    parts = []
    for c in batch.COLUMNS:
        marks = [r.right(c) for r in scored if r.right(c) is not None]
        if marks:
            parts.append(f"**{c}** {sum(marks)}/{len(marks)} right")
    answered = sum(1 for r in table if r.answers)
    head = f"{answered} of {len(table)} prompts answered" + (" (stopped)" if stopped else " so far…" if running else "")
    return head + (" · " + " · ".join(parts) if parts else " · add an expected answer per prompt (JSONL) to score")


def build(engine, shared) -> None:
    def run_batch(text, upload, temperature, max_new_tokens, seed, loop_guard, request: gr.Request,
                  progress=gr.Progress()):
        cancel = new_run(request)
        try:
            items = batch.parse_items(text, upload if upload else None)
            options = parse_options(temperature, max_new_tokens, seed, loop_guard)
            scope = engine.scope(session_of(request))
            progress(0, desc="routing")
            table = []
            for table in batch.run(engine, items, options, cancel=cancel, scope=scope,
                                   progress=lambda d, n: progress(d / n, desc=f"{d} of {n} answers")):
                yield _frame(table), _summary(table, False, running=True), gr.skip(), gr.skip()
            folder = Path(tempfile.mkdtemp(prefix="dlp-batch-"))
            (folder / "dlp-batch.csv").write_text(batch.to_csv(table), encoding="utf-8")
            (folder / "dlp-batch.jsonl").write_text(batch.to_jsonl(table), encoding="utf-8")
            yield (_frame(table), _summary(table, cancel.is_set()),
                   gr.DownloadButton(value=str(folder / "dlp-batch.csv"), visible=True),
                   gr.DownloadButton(value=str(folder / "dlp-batch.jsonl"), visible=True))
        except Exception as exc:  # noqa: BLE001 - one message, the table on screen stays
            gr.Warning(message(exc))
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        finally:
            end_run(request, cancel)

    gr.Markdown(f"Up to {batch.MAX_PROMPTS} prompts, one per line, or a `.jsonl` file with "
                '`{"prompt": "...", "expected": "..."}` per line: each is routed, then answered by the base model, '
                "its most probable kept adapter and DLP's fusion (rows of several prompts share one batched "
                "call). With `expected`, an answer containing that text is marked ✓.")
    with gr.Row():
        text = gr.Textbox(label="Prompts (one per line)", lines=8, value=EXAMPLE, scale=3, elem_id="batch-prompts")
        with gr.Column(scale=2, min_width=240):
            upload = gr.File(label="…or a .txt / .jsonl file", file_types=[".txt", ".jsonl"], type="filepath",
                             elem_id="batch-file")
            with gr.Row():
                run = gr.Button("Run all", variant="primary", elem_id="batch-run")
                stop = gr.Button("Stop", elem_id="batch-stop")
    summary = gr.Markdown("", elem_id="batch-summary")
    table = gr.Dataframe(headers=HEADERS, value=[], wrap=True, interactive=False, elem_id="batch-table",
                         column_widths=["44px", "220px", "150px", "260px", "220px", "220px"])
    with gr.Row():
        csv_button = gr.DownloadButton("Download CSV", visible=False, elem_id="batch-csv")
        jsonl_button = gr.DownloadButton("Download JSONL", visible=False, elem_id="batch-jsonl")
    inputs = [text, upload, shared.temperature, shared.max_new_tokens, shared.seed, shared.loop_guard]
    run.click(run_batch, inputs, [table, summary, csv_button, jsonl_button], api_name="batch",
              show_progress="full")
    stop.click(cancel_run, None, None, queue=False, api_name=False)
