"""Training the learned fusion methods on composite two-skill examples, over a frozen model and adapters.

Only the fusion's own weights learn: 240 numbers for ``layerwise`` (layers x labels), one linear gate per
layer for ``token`` (~140k numbers on SmolLM2-135M). The loss is the reply's next-token loss, as for the
adapters. Each example runs with the mixture the router picks for its prompt, as it will at inference;
an example whose route keeps a single adapter teaches a mixing method nothing and is skipped.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from .composite_answers import CompositeExample
from .fusion import build_plan, fused_layers
from .fusion_methods import method_mixture
from .learned_fusion import LAYERWISE_FILE as LAYERWISE_NAME, TOKEN_FILE as TOKEN_NAME
from .learned_fusion import Learned, LayerwiseWeights, TokenGate, decoder_layers, save
from .manifest import RESERVED as BASE
from .tasks import Example
from .training import _batch, bf16_autocast, encode, reply_loss

DEFAULT_LR = {"layerwise": 2e-2, "token": 3e-3}


def new_module(method: str, labels: list[str], model, prior_strength: float = 1.0,
               with_base: bool = False) -> LayerwiseWeights | TokenGate:
    n_layers = len(decoder_layers(model))
    if method == "layerwise":
        return LayerwiseWeights(labels, n_layers)
    if method == "token":
        return TokenGate(labels, n_layers, model.config.hidden_size, prior_strength, with_base)
    raise ValueError(f"no learned fusion called '{method}'")


def line_weights(tokenizer, labels: list[int]) -> list[float]:
    """Per-token loss weights that give every line of the reply the same total (0 on the prompt).

    A composed answer is a short line from one adapter and a long one from the other ("negative" then
    40 tokens of French): with plain token weights the hand-off between them (the label, the line break,
    going on instead of stopping) is a few tokens in sixty and the gate learns the long half only. A
    token that holds a line break ends its line."""
    reply = [k for k, t in enumerate(labels) if t != -100]
    lines, current = [], []
    for k in reply:
        current.append(k)
        if "\n" in tokenizer.decode([labels[k]]):
            lines.append(current)
            current = []
    if current:
        lines.append(current)
    weights = [0.0] * len(labels)
    for line in lines:
        for k in line:
            weights[k] = len(reply) / (len(lines) * len(line))  # mean weight 1 over the reply
    return weights


def training_rows(engine, method: str, examples: list[CompositeExample], max_len: int,
                  balance: str = "tokens") -> list[tuple]:
    """(ids, labels, mixture, plan method, token weights) per example that the route lets ``method`` mix."""
    rows = []
    for ex in examples:
        mixture, plan_method = method_mixture(method, engine.route(ex.prompt).selected)
        if plan_method != method:
            continue
        ids, labels = encode(engine.tokenizer, Example(ex.prompt, ex.response), max_len)
        weights = line_weights(engine.tokenizer, labels) if balance == "lines" else \
            [float(t != -100) for t in labels]
        rows.append((ids, labels, engine.check_mixture(mixture), plan_method, weights))
    return rows


def weighted_reply_loss(model, batch: dict[str, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """:func:`dlp.training.reply_loss` with a weight per reply token (see :func:`line_weights`)."""
    per_token = reply_loss(model, batch, reduction="none")
    w = weights[:, 1:][batch["labels"][:, 1:] != -100].to(per_token.dtype)
    return (per_token * w).sum() / w.sum().clamp_min(1e-6)


def train_fusion(engine, method: str, examples: list[CompositeExample], out_dir: Path | None, epochs: int = 2,
                 batch: int = 8, lr: float | None = None, max_len: int = 256, seed: int = 0,
                 max_seconds: float | None = None, progress: bool = True,
                 balance: str = "tokens", prior_strength: float = 1.0,
                 with_base: bool = False) -> tuple[Learned, dict]:
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = engine.model
    model.requires_grad_(False)
    module = new_module(method, [*engine.names, BASE], model, prior_strength, with_base).to(engine.device)
    learned = Learned(**{("layerwise" if method == "layerwise" else "token"): module})
    rows = training_rows(engine, method, examples, max_len, balance)
    if not rows:
        raise ValueError("no training example keeps two adapters; nothing to learn")
    lr = lr or DEFAULT_LR[method]
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * ((len(rows) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    layers = fused_layers(model)
    autocast = torch.autocast(engine.device.type, dtype=torch.bfloat16, enabled=bf16_autocast(engine.device))
    rng = random.Random(seed)
    log, start = [], time.perf_counter()
    bar = tqdm(total=steps, desc=f"train {method} fusion", disable=not progress, mininterval=5)
    for epoch in range(epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for s in range(0, len(order), batch):
            chunk = [rows[k] for k in order[s : s + batch]]
            b = {k: v.to(engine.device) for k, v in _batch([(r[0], r[1]) for r in chunk],
                                                             engine.tokenizer.pad_token_id).items()}
            weights = torch.zeros(b["labels"].shape)
            for i, r in enumerate(chunk):
                weights[i, : len(r[4])] = torch.tensor(r[4])
            with autocast:
                plan = build_plan(layers, [r[2] for r in chunk], engine.device, [r[3] for r in chunk], learned)
                with plan.applied():
                    loss = weighted_reply_loss(model, b, weights.to(engine.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            log.append({"step": len(log) + 1, "epoch": epoch, "loss": round(loss.item(), 4)})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if max_seconds and time.perf_counter() - start > max_seconds:
                break
        if max_seconds and time.perf_counter() - start > max_seconds:
            break
    bar.close()
    module.requires_grad_(False)
    gate = {"prior_strength": prior_strength, "with_base": with_base} if method == "token" else {}
    info = {"method": method, "balance": balance, **gate, "n_examples": len(rows), "n_skipped": len(examples) - len(rows),
            "kinds": sorted({e.kind for e in examples}), "epochs": epochs, "batch": batch, "lr": lr, "seed": seed,
            "max_len": max_len, "n_per_kind": len(examples) // max(1, len({e.kind for e in examples})),
            "steps_done": len(log), "train_seconds": round(time.perf_counter() - start, 1),
            "device": str(engine.device), "first_loss": log[0]["loss"],
            "final_loss": round(sum(r["loss"] for r in log[-10:]) / min(10, len(log)), 4), "log": log}
    if out_dir is not None:
        save(module, out_dir, info)
    return learned, info


def write_card(folder: Path, infos: dict[str, dict]) -> None:
    """assets/fusion/README.md: what each learned fusion is, what it learned from, and how to reproduce it."""
    from .training import LICENSES

    source, license_, split = LICENSES["two_skill"]
    lines = ["# Learned fusion weights for the shipped adapters", "",
             f"- **Data**: {source}; {split}. License: **{license_}**. The composite examples are rebuilt by "
             "`python -m dlp train-fusion` and are not in this repository.",
             "- **Frozen**: the base model and all seven adapters; only these weights learned, on the reply's "
             "next-token loss, with the router's own kept set and weights for each example.", ""]
    for method, info in infos.items():
        what = ("one weight per layer and adapter (LoRA Soups' CAT), initialised at 1 (= sum)"
                if method == "layerwise" else
                "a linear gate per layer over the RMS-normalised hidden state entering the layer, softmax over the "
                "kept set; " + ("its logits are added to the log of the router's weights (a zero gate is DLP's renorm)"
                                if info.get("prior_strength", 1.0) == 1.0 else
                                f"its logits start from {info['prior_strength']:g} x the log of the router's weights "
                                "(the router picks the adapters, the gate sets the mix)")
                + ("; the base model (no LoRA) is always one of its options" if info.get("with_base") else ""))
        lines += [f"## `{method}` ({LAYERWISE_NAME if method == 'layerwise' else TOKEN_NAME})", "",
                  f"- {what}.",
                  f"- {info['n_examples']} examples ({info['n_skipped']} skipped: the router kept one adapter) of "
                  f"{', '.join(info['kinds'])}; {info['steps_done']} steps of {info['batch']}, {info['epochs']} "
                  f"epoch(s), AdamW lr {info['lr']} (one-cycle), seed {info['seed']}, {info['train_seconds']} s on "
                  f"{info['device']}; loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}"
                  + ("; every line of an answer weighs the same in the loss (the short half and the hand-off count "
                     "as much as the long half)." if info.get("balance") == "lines" else "."),
                  f"- Reproduce: `python -m dlp train-fusion --method {method} --n {info.get('n_per_kind', '?')} "
                  f"--epochs {info['epochs']} --max-len {info.get('max_len', 256)} --lr {info['lr']}"
                  f"{' --balance lines' if info.get('balance') == 'lines' else ''}"
                  f"{' --gate-prior ' + format(info.get('prior_strength', 1.0), 'g') if method == 'token' else ''}"
                  f"{' --gate-base' if info.get('with_base') else ''}`", ""]
    (Path(folder) / "README.md").write_text("\n".join(lines), encoding="utf-8")
