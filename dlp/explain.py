"""Why the router chose what it chose, and where the adapters changed the answer.

- :func:`word_occlusion`: drop one word, route again (the router takes under a millisecond), and
  see how much the kept adapters' probability falls: the words that moved the router.
- :func:`word_diff`: a word-level diff of two answers (what an adapter column changed).
- :func:`token_gain`: one teacher-forced pass over an answer under the base model and under the
  mixture that wrote it; per token, how much more likely the mixture made it.
"""

from __future__ import annotations

import difflib
import re

import torch

from . import compute

MAX_WORDS = 200  # occlusion routes once per word; longer prompts are explained on their first words

_WORD = re.compile(r"\S+")


def word_occlusion(probs_of, prompt: str, kept: list[str]) -> list[tuple[str, float, str]]:
    """(word, score, adapter) in prompt order: score is the largest drop of one kept adapter's probability
    when the word is removed (positive: the word pulled the router towards that adapter).
    ``probs_of(text) -> {name: p}``."""
    words = _WORD.findall(prompt)[:MAX_WORDS]
    if not words or not kept:
        return [(w, 0.0, "") for w in words]
    full = probs_of(" ".join(words))
    out = []
    for i, w in enumerate(words):
        rest = probs_of(" ".join(words[:i] + words[i + 1 :]) or ".")
        drops = {k: full.get(k, 0.0) - rest.get(k, 0.0) for k in kept}
        best = max(drops, key=drops.get)
        out.append((w, drops[best], best))
    return out


def top_words(scores: list[tuple[str, float, str]], n: int = 5) -> list[tuple[str, float, str]]:
    seen, out = set(), []
    for w, s, a in sorted(scores, key=lambda x: -x[1]):
        key = w.lower().strip(".,:;!?\"'()")
        if s > 0.005 and key not in seen:
            seen.add(key)
            out.append((w, s, a))
        if len(out) == n:
            break
    return out


def word_diff(reference: str, text: str) -> list[tuple[str, str | None]]:
    """``text`` as (chunk, label) pairs: label "+" for words not in ``reference``, None for shared ones;
    words only in ``reference`` appear as ("-" label) so a reader sees what was dropped."""
    a, b = _WORD.findall(reference), _WORD.findall(text)
    out: list[tuple[str, str | None]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append((" ".join(b[j1:j2]) + " ", None))
        else:
            if i2 > i1:
                out.append((" ".join(a[i1:i2]) + " ", "-"))
            if j2 > j1:
                out.append((" ".join(b[j1:j2]) + " ", "+"))
    return out


def likeness(a: str, b: str) -> float:
    """Share of words two answers have in common, in order (difflib's ratio over words): 1 = the same."""
    wa, wb = _WORD.findall(a), _WORD.findall(b)
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).ratio()


def mixtures_between(a: str, b: str, steps: int) -> list[tuple[float, dict[str, float]]]:
    """(weight on b, mixture) from all-``a`` to all-``b``; ``base`` (no adapter) may be either end."""
    weights = [i / (steps - 1) for i in range(steps)]
    return [(w, {n: v for n, v in ((a, 1.0 - w), (b, w)) if v > 0}) for w in weights]


def token_gain(engine, prompt: str, answer: str, mixture: dict[str, float], scope=None) -> list[tuple[str, float]]:
    """(token text, log p_mixture - log p_base) for each answer token: one batched forward of two rows."""
    return compute.run(_token_gain, engine, prompt, answer, mixture, scope)


@torch.inference_mode()  # thread-local: set on the thread that runs it
def _token_gain(engine, prompt: str, answer: str, mixture: dict[str, float], scope=None) -> list[tuple[str, float]]:
    from .fusion import build_plan, fused_layers

    tok = engine.tokenizer
    ids, mask = engine.encode([prompt])
    answer_ids = tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"].to(engine.device)
    if answer_ids.shape[1] == 0:
        return []
    full = torch.cat([ids, answer_ids], dim=1).repeat(2, 1)  # (2, T)
    attn = torch.cat([mask, torch.ones_like(answer_ids)], dim=1).repeat(2, 1)
    plan = build_plan(fused_layers(engine.model), [{}, engine.check_mixture(mixture, scope)], engine.device)
    with plan.applied():
        logits = engine.model(input_ids=full, attention_mask=attn).logits.float()  # (2, T, V)
    start = ids.shape[1]
    logp = torch.log_softmax(logits[:, start - 1 : -1], dim=-1)  # predictions for the answer tokens
    picked = logp.gather(-1, answer_ids.repeat(2, 1)[..., None])[..., 0]  # (2, n)
    gain = (picked[1] - picked[0]).tolist()
    pieces = [tok.decode(answer_ids[0, : i + 1]) for i in range(answer_ids.shape[1])]
    texts = [pieces[0]] + [pieces[i][len(pieces[i - 1]) :] for i in range(1, len(pieces))]
    return list(zip(texts, gain))
