"""Batched generation with per-row streaming and honest per-row timing.

Uses transformers' ``generate`` with a streamer (its own mechanism): :class:`RowStreamer` receives
every step's tokens for all rows, records when each row's tokens arrive and when each row ends,
and publishes snapshots on a queue that :func:`stream_generate` yields from. Sampling, when asked,
draws from a per-call ``torch.Generator`` inside a logits processor, so a seed gives the same text
however many other requests run at the same time (the global RNG is never touched).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from . import compute
from .fusion import FusionPlan


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 128  # reply length cap per row
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0  # sampling seed (ignored when greedy)
    nucleus: float = 0.95  # sampling's own top-p over tokens (not the router's top-p)
    loop_guard: bool = False  # end a row once it repeats itself (see LoopGuard); the page and CLI turn it on
    min_new_tokens: int = 0  # the benchmark forces equal lengths with this


@dataclass
class RowTiming:
    prefill_ms: float = 0.0  # prompt forward, up to the first token (shared by the batch)
    ttft_ms: float = 0.0  # from the start of generation to this row's first token
    decode_ms: float = 0.0  # first token to this row's last token
    tokens: int = 0  # tokens this row produced (EOS excluded)
    total_ms: float = 0.0  # from the start of generation to this row's end

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / (self.decode_ms / 1000) if self.tokens > 1 and self.decode_ms > 0 else 0.0

    def as_dict(self) -> dict:
        return {"prefill_ms": round(self.prefill_ms, 1), "ttft_ms": round(self.ttft_ms, 1),
                "decode_ms": round(self.decode_ms, 1), "tokens": self.tokens,
                "tokens_per_s": round(self.tokens_per_s, 1), "total_ms": round(self.total_ms, 1)}


@dataclass
class StreamState:
    texts: list[str]  # decoded text of each row so far
    token_ids: list[list[int]]
    timings: list[RowTiming]
    done: list[bool]  # True once a row produced EOS or hit the cap
    finished: bool = False  # True for the last snapshot
    error: str = ""
    cancelled: bool = False  # True once the run was stopped (the text is partial)
    eos: list[bool] | None = None  # rows that ended on their own (EOS, loop guard); with ``cancelled``, the others were cut
    repeating: list[bool] | None = None  # rows the loop guard ended
    waiting: bool = False  # queued behind another run on the compute thread (see dlp.compute)

    def per_column(self, rows: list[int]) -> "StreamState":
        """This state with one entry per column, column i showing batch row ``rows[i]``."""
        def pick(values):
            return None if values is None else [values[r] for r in rows]

        return dataclasses.replace(self, texts=pick(self.texts), token_ids=[list(self.token_ids[r]) for r in rows],
                                   timings=[RowTiming(**vars(self.timings[r])) for r in rows], done=pick(self.done),
                                   eos=pick(self.eos), repeating=pick(self.repeating))

    def cut_short(self, i: int) -> bool:
        """Row ``i`` was stopped mid-answer (not one that had already ended)."""
        return self.finished and self.cancelled and not (self.eos or self.done)[i]


class SeededSampler(LogitsProcessor):
    """Temperature + nucleus sampling, expressed as a one-hot score so greedy decoding picks the
    sampled token. Every row draws from its own generator, all seeded alike: two rows with the same
    mixture give the same text, so the differences between columns come from the adapters, not from
    which random numbers a row happened to get. Private generators also keep sampling reproducible
    under concurrency (the global RNG is never touched)."""

    def __init__(self, temperature: float, nucleus: float, seed: int, device: torch.device, rows: int):
        self.temperature = temperature
        self.nucleus = nucleus
        self.generators = [torch.Generator(device=device).manual_seed(seed) for _ in range(rows)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)  # (rows, V)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > self.nucleus  # keep the smallest set reaching the nucleus
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        draws = torch.cat([torch.multinomial(sorted_p[i : i + 1], 1, generator=g)
                           for i, g in enumerate(self.generators)])  # (rows, 1)
        pick = order.gather(-1, draws)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, pick, 0.0)


def repeats_at_end(ids: list[int], times: int = 3, shortest: int = 4, longest: int = 64, run: int = 32) -> bool:
    """The last ``n`` tokens, for some ``shortest <= n <= longest``, are the same ``n`` tokens ``times``
    times in a row: a loop ("Il est en 4 bages de 6 apples." ten times). A unit shorter than ``shortest``
    counts only once it fills the last ``run`` tokens, so "0 0 0" or a few indents are not a loop and
    "5 5 5 ..." to the cap is."""
    tail = ids[-run:]
    if len(tail) == run and any(tail[p:] == tail[:-p] for p in range(1, shortest)):
        return True
    last = ids[-1] if ids else None
    for n in range(shortest, min(longest, len(ids) // times) + 1):
        if any(ids[-1 - k * n] != last for k in range(1, times)):
            continue  # cheap test first: this runs on every row at every step
        tail = ids[-n:]
        if any(tail[p:] == tail[:-p] for p in range(1, shortest)):
            continue  # a run of one short unit: judged above, over ``run`` tokens
        if all(ids[-(k + 1) * n : len(ids) - k * n] == tail for k in range(1, times)):
            return True
    return False


class LoopGuard(StoppingCriteria):
    """Ends each row of a batch on its own once it loops (see :func:`repeats_at_end`); the rows it ended
    are in ``ended``, so the page can mark them "(stopped: repeating)". Small models at greedy decoding
    loop often, and a looping column would keep the whole batch, and the page, waiting to the cap."""

    def __init__(self, prompt_len: int, times: int = 3, stop_ids: set[int] | None = None):
        self.prompt_len, self.times = prompt_len, times
        self.stop_ids = stop_ids or set()  # a row that produced one has ended; the padding after it is no loop
        self.ended: set[int] = set()
        self.finished: set[int] = set()  # rows that produced a stop id (checked on each step's new token)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        rows = input_ids[:, self.prompt_len :].tolist()
        for i, ids in enumerate(rows):
            if ids and ids[-1] in self.stop_ids:
                self.finished.add(i)
            if i not in self.ended and i not in self.finished and repeats_at_end(ids, self.times):
                self.ended.add(i)
        return torch.tensor([i in self.ended for i in range(len(rows))], dtype=torch.bool, device=input_ids.device)


class RowStreamer(BaseStreamer):
    """Collects each row's tokens as ``generate`` produces them; publishes snapshots to a queue."""

    def __init__(self, tokenizer, rows: int, eos_ids: set[int], updates: queue.Queue, every: int = 1,
                 looped: set[int] | None = None):
        self.tokenizer = tokenizer
        self.looped = looped if looped is not None else set()  # the LoopGuard's ended rows (shared, live)
        self.eos_ids = eos_ids
        self.updates = updates
        self.every = every  # publish every n steps (decoding text is not free)
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self.timings = [RowTiming() for _ in range(rows)]
        self.start = time.perf_counter()
        self.first_token_at: float | None = None
        self.last_at = [0.0] * rows
        self.got_prompt = False
        self.steps = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.got_prompt:  # generate first hands over the prompt ids
            self.got_prompt = True
            return
        now = time.perf_counter()
        tokens = value.reshape(len(self.ids), -1)[:, -1].tolist()  # (rows,) -> host: the step is complete
        if self.first_token_at is None:
            self.first_token_at = now
        for i, tok in enumerate(tokens):
            if self.done[i]:
                continue
            if tok in self.eos_ids or i in self.looped:  # a row the loop guard ended gets padding from now on
                self.done[i] = True
                continue
            self.ids[i].append(tok)
            self.last_at[i] = now
            t = self.timings[i]
            if t.tokens == 0:
                t.ttft_ms = (now - self.start) * 1000
            t.tokens += 1
        self.steps += 1
        if self.steps % self.every == 0:
            self.updates.put(self.snapshot(finished=False))

    def end(self) -> None:
        self.updates.put(self.snapshot(finished=True))

    def snapshot(self, finished: bool) -> StreamState:
        prefill = ((self.first_token_at or self.start) - self.start) * 1000
        for i, t in enumerate(self.timings):
            t.prefill_ms = prefill
            if t.tokens:
                t.decode_ms = (self.last_at[i] - self.first_token_at) * 1000
                t.total_ms = (self.last_at[i] - self.start) * 1000
        # A character split over tokens decodes to U+FFFD until its last byte comes (or never, at the cap): shown
        # as nothing rather than as a stray replacement mark.
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd") for ids in self.ids]
        done = [d or finished for d in self.done]
        return StreamState(texts, [list(x) for x in self.ids], [RowTiming(**vars(t)) for t in self.timings],
                           done, finished, eos=[d or i in self.looped for i, d in enumerate(self.done)],
                           repeating=[i in self.looped for i in range(len(self.ids))])


def stop_ids(tokenizer) -> set[int]:
    """EOS, plus the chat markers that can only mean the answer is over: a fused model sometimes skips
    ``<|im_end|>`` and opens a new turn (``<|im_start|>system...``) instead of stopping."""
    eos = tokenizer.eos_token_id
    ids = {eos} if isinstance(eos, int) else set(eos or [])
    for marker in ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tokenizer.convert_ids_to_tokens(tid) == marker:
            ids.add(tid)
    return ids


class CancelFlag(StoppingCriteria):
    """Ends ``generate`` at the next token once ``event`` is set: a stopped or abandoned run frees the
    CPU and its queue slot at once instead of decoding to the end unseen."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        stop = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _Skipped(Exception):
    pass


def stream_generate(model, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    plan: FusionPlan | Callable[[], FusionPlan], options: GenerationOptions, every: int = 1,
                    cancel: threading.Event | None = None, fresh_thread: bool = False) -> Iterator[StreamState]:
    """Run one batched ``generate`` under ``plan`` on the compute thread (:mod:`dlp.compute`); yield snapshots
    as rows grow. Called from the compute thread itself, it runs inline and yields once it is done. A
    callable ``plan`` is built there, when the batch's turn comes (building it is torch work too).

    Setting ``cancel`` stops decoding within a token (the last snapshot keeps the partial text). Closing
    this iterator early (a client went away, the UI cancelled the event) sets it too."""
    cancel = cancel or threading.Event()  # the caller's Stop (may span several calls: never set here)
    walked_away = threading.Event()  # this call's own: set when the consumer stops reading
    updates: queue.Queue = queue.Queue()
    eos_ids = stop_ids(tokenizer)
    criteria = StoppingCriteriaList([CancelFlag(cancel, walked_away)])
    guard = LoopGuard(input_ids.shape[1], stop_ids={*eos_ids, tokenizer.pad_token_id} - {None}) \
        if options.loop_guard else None
    if guard is not None:
        criteria.append(guard)
    streamer = RowStreamer(tokenizer, input_ids.shape[0], eos_ids, updates, every, guard.ended if guard else None)
    processors = LogitsProcessorList()
    if options.temperature > 0:
        processors.append(SeededSampler(options.temperature, options.nucleus, options.seed, input_ids.device,
                                        input_ids.shape[0]))

    started = threading.Event()

    def work():
        started.set()
        streamer.start = time.perf_counter()  # a run that waited its turn is timed from here
        try:
            if cancel.is_set() or walked_away.is_set():
                raise _Skipped
            with torch.inference_mode(), (plan if isinstance(plan, FusionPlan) else plan()).applied():
                model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=options.max_new_tokens,
                    min_new_tokens=options.min_new_tokens or None,
                    do_sample=False, logits_processor=processors, streamer=streamer,
                    stopping_criteria=criteria,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=list(eos_ids),
                    top_p=None, top_k=None, temperature=None,
                )
        except _Skipped:  # stopped while it waited: nothing was generated
            streamer.end()
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the last snapshot
            state = streamer.snapshot(finished=True)
            state.error = f"{type(exc).__name__}: {exc}"
            updates.put(state)

    if fresh_thread:  # the bench's "stock" path: how requests ran before the compute thread
        threading.Thread(target=work, daemon=True, name="dlp-generate").start()
    elif compute.on_compute_thread():  # called from work already on the compute thread (CLI, training): inline
        work()
    else:
        compute.submit(work)
    waited = False
    try:
        while True:
            try:
                state = updates.get(timeout=0.3 if not waited else None)
            except queue.Empty:  # another run has the compute thread: say so once, then wait for ours
                waited = True
                if not started.is_set():
                    yield dataclasses.replace(streamer.snapshot(finished=False), waiting=True)
                continue
            state.cancelled = cancel.is_set()
            yield state
            if state.finished:
                break
    finally:
        walked_away.set()  # no-op after a normal end; stops the worker when the consumer walked away
