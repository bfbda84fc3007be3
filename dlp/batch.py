"""Many prompts at once: each routed, then answered by the base model, its top kept adapter and DLP's fusion.

The rows of several prompts share one ``generate`` call (each row carries its own prompt and mixture), so a
list of 50 prompts costs a few batched calls, not 150 single ones. An optional ``expected`` text per prompt
marks each answer right or wrong (a case-insensitive substring, as the page's examples are checked).
"""

from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .errors import DLPError

MAX_PROMPTS = 50
COLUMNS = ("base", "single", "fused")  # the single column is the router's most probable kept adapter


@dataclass(frozen=True)
class BatchItem:
    prompt: str
    expected: str = ""


@dataclass
class BatchRow:
    prompt: str
    expected: str
    route: dict[str, float]  # kept adapter -> weight
    answers: dict[str, str] = field(default_factory=dict)  # column -> text
    labels: dict[str, str] = field(default_factory=dict)  # column -> what it ran ("math only", ...)

    def right(self, column: str) -> bool | None:
        if not self.expected or column not in self.answers:
            return None
        return self.expected.lower() in self.answers[column].lower()

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "expected": self.expected, "route": self.route, "answers": self.answers,
                "labels": self.labels, "right": {c: self.right(c) for c in self.answers}}


def parse_items(text: str = "", filename: str | None = None) -> list[BatchItem]:
    """Prompts from pasted text (one per line) or a file: ``.jsonl`` (``{"prompt": ..., "expected": ...}`` per
    line) or plain text. Refuses more than ``MAX_PROMPTS`` and says which line is wrong."""
    source = "the file" if filename else "the box"
    if filename:
        try:
            with open(filename, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise DLPError(f"Could not read {source}: {exc}", hint="upload a UTF-8 .txt or .jsonl file") from None
    lines = [(n, line.strip()) for n, line in enumerate((text or "").splitlines(), 1) if line.strip()]
    items = []
    jsonl = bool(filename and filename.endswith(".jsonl")) or (lines and lines[0][1].startswith("{"))
    for n, line in lines:
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DLPError(f"Line {n} of {source} is not JSON ({exc.msg})",
                               hint='write one {"prompt": "...", "expected": "..."} per line') from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
                raise DLPError(f'Line {n} of {source} has no "prompt" text')
            items.append(BatchItem(obj["prompt"].strip(), str(obj.get("expected") or "").strip()))
        else:
            items.append(BatchItem(line))
    if not items:
        raise DLPError("No prompts", hint="paste one prompt per line, or upload a .txt or .jsonl file")
    if len(items) > MAX_PROMPTS:
        raise DLPError(f"{len(items)} prompts; the limit is {MAX_PROMPTS}", hint="split the list")
    return items


def run(engine, items: list[BatchItem], options, columns: tuple[str, ...] = COLUMNS, rows_per_call: int = 12,
        cancel: threading.Event | None = None, scope=None,
        progress: Callable[[int, int], None] | None = None) -> Iterator[list[BatchRow]]:
    """Route every prompt, then answer them in batched calls of about ``rows_per_call`` rows; yields the
    table after each call (a Stop ends it after the current call, with the rows done so far)."""
    from .engine import Column

    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        raise DLPError(f"Unknown batch column(s) {unknown}", hint="use " + ", ".join(COLUMNS))
    table = []
    for item in items:
        route = engine.route(item.prompt, scope=scope)
        table.append(BatchRow(item.prompt, item.expected, dict(route.selected)))
    work = []  # (row index, column name, Column)
    for i, row in enumerate(table):
        kept = [n for n in row.route if n != "base"]
        for c in columns:
            if c == "base":
                work.append((i, c, Column("base", "Base model", {})))
            elif c == "single" and kept:
                work.append((i, c, Column(f"single:{kept[0]}", f"{kept[0]} only", {kept[0]: 1.0})))
            elif c == "fused":
                work.append((i, c, Column("fused", "DLP fused", dict(row.route))))
    done = 0
    for s in range(0, len(work), rows_per_call):
        if cancel is not None and cancel.is_set():
            break
        chunk = work[s : s + rows_per_call]
        last = None
        for last in engine.stream([table[i].prompt for i, _, _ in chunk], [col for _, _, col in chunk], options,
                                  every=10_000, cancel=cancel, scope=scope):
            pass
        for (i, c, col), text in zip(chunk, last.state.texts):
            table[i].answers[c] = text
            table[i].labels[c] = col.label
        done += len(chunk)
        if progress is not None:
            progress(done, len(work))
        yield table


def to_csv(table: list[BatchRow], columns: tuple[str, ...] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["prompt", "expected", "route", *[f"{c} answer" for c in columns],
                     *[f"{c} right" for c in columns]])
    for row in table:
        writer.writerow([row.prompt, row.expected, " + ".join(f"{n} {w:.2f}" for n, w in row.route.items()),
                         *[row.answers.get(c, "") for c in columns],
                         *["" if row.right(c) is None else int(row.right(c)) for c in columns]])
    return out.getvalue()


def to_jsonl(table: list[BatchRow]) -> str:
    return "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in table)
