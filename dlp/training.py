"""Training one task adapter with PEFT's own LoRA injection and save format.

The loss covers the assistant's reply only, in the same chat template the demo generates with,
so an adapter learns the answer format (``#### 42``, ``positive``, a code block) and not the prompt.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .tasks import TEMPLATES, Example, load_examples

LICENSES = {
    "math": ("GSM8K (openai/grade-school-math)", "MIT", "train split, 7,473 problems"),
    "code": ("MBPP (google-research/mbpp)", "CC BY 4.0", "task ids 1-10 and 511-974 (ids 11-510 are the test set)"),
    "translate_fr": ("Tatoeba EN-FR via manythings.org/anki, tatoeba.org contributors", "CC BY 2.0 FR",
                      "90% of English sentences by hash; 10% held out"),
    "sentiment": ("UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015)", "CC BY 4.0",
                  "85% of sentences by hash; 15% held out"),
    "science_qa": ("ARC-Easy (AI2)", "CC BY-SA 4.0", "train split"),
    "summarize": ("SciTLDR-A (AI2)", "Apache-2.0", "train split, author TLDRs"),
    "reading_qa": ("SQuAD v1.1 (Rajpurkar et al. 2016; RouterLens subset)", "CC BY-SA 4.0",
                   "80% of passages by hash; questions on the other 20% held out"),
    "shakespeare": ("Tiny Shakespeare (karpathy/char-rnn), Shakespeare's plays", "public domain (repo: MIT)",
                    "90% of turns by hash: each speech -> the next one"),
    "two_skill": ("composite two-skill prompts from UCI Sentiment (CC BY 4.0), SciTLDR-A (Apache-2.0) and SQuAD "
                  "(CC BY-SA 4.0) training items, French halves by this repo's translate_fr adapter (Tatoeba, CC BY 2.0 FR)",
                  "CC BY-SA 4.0 (the strictest of its sources)", "training items only (see dlp/composite_answers.py)"),
}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600  # optimizer steps
    batch_size: int = 16  # sequences per step
    max_len: int = 256  # tokens per sequence (prompt + reply), longer ones are cut from the prompt's start
    lr: float = 8e-4  # peak learning rate, linear warm-up then cosine decay
    rank: int = 8  # LoRA rank
    alpha: int = 16  # LoRA alpha (scale = alpha / rank)
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    seed: int = 0
    micro_batch: int = 8  # sequences per forward pass; gradients add up to batch_size (peak memory: 2 CPUs' 24 GB)


# Budgets sized to each task's data: about 2-4 passes over the training items (code: ~8 over MBPP's 474).
# A GPU trains all seven in a few minutes; on 2 CPU cores one takes about an hour.
TASK_CONFIGS: dict[str, TrainConfig] = {
    "math": TrainConfig(steps=900, max_len=384),
    "code": TrainConfig(steps=240, max_len=320),
    "translate_fr": TrainConfig(steps=600, max_len=128),
    "sentiment": TrainConfig(steps=320, max_len=128),
    "science_qa": TrainConfig(steps=560, max_len=192),
    "summarize": TrainConfig(steps=480, max_len=384),
    "reading_qa": TrainConfig(steps=600, max_len=320),
    "shakespeare": TrainConfig(steps=150, max_len=160),
    "two_skill": TrainConfig(steps=90, batch_size=16, max_len=256, lr=5e-4),
}


def encode(tokenizer, example: Example, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) for one chat pair."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": example.prompt}], tokenize=False, add_generation_prompt=True
    )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(example.response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    r_ids = r_ids[: max_len - 16]
    p_ids = p_ids[-(max_len - len(r_ids)):]
    return p_ids + r_ids, [-100] * len(p_ids) + r_ids


def _batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _lr_at(step: int, cfg: TrainConfig) -> float:
    warm = max(1, cfg.steps // 10)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def reply_loss(peft_model, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Next-token loss over the reply tokens, with logits computed for those tokens only.

    The same loss as the model's own ``labels=`` path, but that one makes float32 logits for every position
    (16 x 384 x 49k vocab: 1.2 GB, several copies in backward), which ran a 24 GB machine out of memory on
    GSM8K; prompt positions carry no loss, so they need no logits."""
    lm = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    hidden = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = lm.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction=reduction)


def accumulate(peft_model, rows: list[tuple[list[int], list[int]]], micro_batch: int, pad_id: int,
               device: torch.device) -> torch.Tensor:
    """Backward the mean reply loss of ``rows`` in micro-batches of similar length (less padding, a fraction
    of the memory); the gradients add up to the whole batch's. Returns the loss."""
    rows = sorted(rows, key=lambda r: len(r[0]))
    n_reply = sum(1 for _, y in rows for t in y[1:] if t != -100)
    loss = torch.zeros(())
    for i in range(0, len(rows), micro_batch):
        batch = {k: v.to(device) for k, v in _batch(rows[i : i + micro_batch], pad_id).items()}
        part = reply_loss(peft_model, batch, reduction="sum") / n_reply
        part.backward()
        loss += part.detach().float().cpu()
    return loss


def bf16_autocast(device: torch.device) -> bool:
    """bf16 autocast over the float32 weights: on CUDA, and on CPUs with native bf16 (AVX512-BF16 or AMX),
    where it measured 2.1x faster per step than float32 on 2 cores (4.8 s vs 10.1 s, 16 x 160 tokens)."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_adapter(model, tokenizer, task: str, out_dir: Path, cfg: TrainConfig | None = None,
                  progress: bool = True, max_seconds: float | None = None, resume_from: Path | None = None,
                  examples: list[Example] | None = None) -> dict:
    """Train, save a PEFT folder (16-bit safetensors) with a card, and return the loss log.

    The base stays float32 (the weights the demo runs on a CPU); the forward runs under bf16 autocast
    where the hardware has bf16 (see :func:`bf16_autocast`). ``resume_from`` continues a saved adapter
    (its rank and targets win over ``cfg``'s): a run cut short by a time budget can go on elsewhere, and
    its earlier runs are kept in the log's ``history``. ``examples`` replaces the task's own data (the
    two-skill baseline LoRA trains on composite examples)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from tqdm.auto import tqdm

    cfg = cfg or TASK_CONFIGS.get(task, TrainConfig())
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = next(model.parameters()).device
    # Every training item once per pass, each pass phrased by another template draw.
    if examples is None:
        first = load_examples(task, "train", seed=cfg.seed)
        passes = max(1, math.ceil(cfg.steps * cfg.batch_size / len(first)))
        examples = first + [ex for seed in range(1, passes) for ex in load_examples(task, "train", seed=cfg.seed + seed)]
    encoded = [encode(tokenizer, ex, cfg.max_len) for ex in examples]

    history = []
    if resume_from is not None:
        peft_model = PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
        lora = peft_model.peft_config["default"]
        cfg = replace(cfg, rank=lora.r, alpha=lora.lora_alpha, targets=tuple(sorted(lora.target_modules)))
        earlier = Path(resume_from) / "train_log.json"
        if earlier.exists():
            old = json.loads(earlier.read_text())["info"]
            history = old.pop("history", []) + [old]
    else:
        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.05, target_modules=list(cfg.targets),
                          task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lora)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # a saved adapter is float16; AdamW steps in float32
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    peft_model.train()
    log, start = [], time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"train {task}", disable=not progress, mininterval=5)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_autocast(device))
    for step in bar:
        k = (step * cfg.batch_size) % len(order)
        rows = [encoded[order[(k + j) % len(order)]] for j in range(cfg.batch_size)]
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        with autocast:
            loss = accumulate(peft_model, rows, cfg.micro_batch, tokenizer.pad_token_id, device)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.append({"step": step + 1, "loss": round(loss.item(), 4), "lr": round(_lr_at(step, cfg), 6)})
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if max_seconds and time.perf_counter() - start > max_seconds:
            break  # a lent GPU's time is fixed: save what was learned, and say so on the card
    seconds = time.perf_counter() - start

    peft_model.eval()
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data = p.data.to(torch.float16)  # 16-bit on disk: half the size, no measurable loss
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    peft_model.unload()  # hand the base model back unchanged for the next task
    info = {"task": task, "config": asdict(cfg), "train_seconds": round(seconds, 1), "device": str(device),
            "bf16_autocast": bf16_autocast(device),
            "final_loss": sum(r["loss"] for r in log[-10:]) / min(10, len(log)), "n_examples": len(examples),
            "steps_done": len(log), "history": history}
    (out_dir / "train_log.json").write_text(json.dumps({"info": info, "log": log}, indent=1))
    write_card(out_dir, task, info)
    return info


def write_card(out_dir: Path, task: str, info: dict, metric: str = "") -> None:
    source, license_, split = LICENSES.get(task, ("unknown", "unknown", ""))
    cfg = info["config"]
    earlier = "".join(f" after {h.get('steps_done', h['config']['steps'])} steps x {h['config']['batch_size']} at lr "
                      f"{h['config']['lr']} on {h.get('device', 'cpu')} ({h['train_seconds']} s), then"
                      for h in info.get("history", []))
    runs = [*info.get("history", []), info]
    phrasings = len(TEMPLATES[task]) if task in TEMPLATES else "the two-skill kinds'"
    reproduce = ", then ".join(
        f"`python -m dlp train-adapter --task {task} --steps {r['config']['steps']}"
        + (f" --resume-from assets/adapters --lr {r['config']['lr']} --seed {r['config']['seed']}" if i else "") + "`"
        for i, r in enumerate(runs))
    (Path(out_dir) / "README.md").write_text(
        f"""# `{task}` LoRA adapter for SmolLM2-135M-Instruct

- **Data**: {source}, {split}. License: **{license_}**. The raw data is not in this repository.
- **Prompts**: {phrasings} natural phrasings mixed (see `dlp/tasks.py`); loss on the reply only.
- **Training**:{earlier} {info.get('steps_done', cfg['steps'])} of {cfg['steps']} steps x {cfg['batch_size']} sequences (max {cfg['max_len']} tokens) over {info['n_examples']} phrased
  items, AdamW lr {cfg['lr']}, seed {cfg['seed']}, {info['train_seconds']} s on {info.get('device', 'cpu')} (float32 base,
  {'bf16 autocast' if info.get('bf16_autocast', 'cuda' in str(info.get('device'))) else 'float32 compute'}); final loss {info['final_loss']:.3f} (`train_log.json`). The base weights are the GGUF file's,
  dequantized to float32: the same weights the demo runs.
- **LoRA**: rank {cfg['rank']}, alpha {cfg['alpha']}, targets {', '.join(cfg['targets'])}; float16 safetensors.
- **On the hub's weights**: a Space installs no GGUF package and loads `HuggingFaceTB/SmolLM2-135M-Instruct` from the hub instead. Same architecture, module names and shapes, so this adapter loads there; but the hub's weights are the unquantized bf16 originals, not the Q4_1 GGUF weights it was trained on, so its answers can differ slightly from the scores here. Not measured: no machine of this project reaches the hub.
- **Metric**: {metric or 'see assets/eval/results.md'}
- **Reproduce**: {reproduce}
"""
    )
