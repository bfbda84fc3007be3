"""A tiny Llama, tokenizer, random LoRA adapters and router, written to a folder with a manifest.

Everything is built from configs (no hub, no download) in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("the a is of to and in what how much many translate french positive negative review code python "
         "function write sum list number two three four five apples cat dog sun light energy summary paper "
         "good bad great terrible movie food love hate please question answer yes no why when who it this "
         "that with for on are was be by as at from or an not").split()
SPECIAL = ["<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant"]
NAMES = ("alpha", "beta", "gamma")
TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + list(dict.fromkeys(WORDS)) + [str(d) for d in range(10)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.chat_template = TEMPLATE
    return fast


def make_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def make_adapter(model, folder: Path, seed: int, targets=("q_proj", "v_proj", "o_proj"), r: int = 4,
                 alpha: int = 8) -> None:
    """A random PEFT LoRA (B is not zero: ``init_lora_weights=False``) saved as safetensors."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(model), cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(3.0)  # large enough to change greedy outputs
    peft_model.save_pretrained(folder, safe_serialization=True)


def two_adapters(root: Path):
    """(tokenizer, model, root) with two LoRAs of different targets and ranks in root/a and root/b."""
    tok = make_tokenizer()
    model = make_model(tok)
    make_adapter(model, Path(root) / "a", seed=1, targets=("q_proj", "v_proj"), r=4, alpha=8)
    make_adapter(model, Path(root) / "b", seed=2, targets=("q_proj", "o_proj", "down_proj"), r=2, alpha=4)
    return tok, model, Path(root)


def make_foreign_adapter(folder: Path) -> None:
    """A LoRA for another base model (hidden size 48, not 32): every shape check must refuse it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=120, hidden_size=48, intermediate_size=40, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    make_adapter(other, folder, seed=1, targets=("q_proj",), r=4)


def hub_cache(folder: Path, cache: Path, repo_id: str = "tiny-org/tiny-llama") -> Path:
    """Copy a saved model into huggingface_hub's cache layout (what a Space holds after a download)."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in Path(folder).iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return Path(cache)


def fused_copy(model, root: Path, names=("a", "b"), device=None, dtype=None):
    """A copy of ``model`` with our fused layers holding the adapters in ``root/<name>``; (model, layers)."""
    import copy

    from dlp.adapters import read_adapter
    from dlp.fusion import add_lora, wrap_linear_layers

    fused = copy.deepcopy(model)
    if device is not None:
        fused = fused.to(device, dtype)
    weights = {n: read_adapter(n, Path(root) / n, fused)[1] for n in names}
    layers = wrap_linear_layers(fused, {k.rsplit(".", 1)[-1] for w in weights.values() for k in w})
    for n, w in weights.items():
        add_lora(layers, n, w)
    return fused, layers


def make_router(tokenizer, folder: Path, labels=("base", *NAMES), seed: int = 0) -> None:
    from dlp.router import MiniMLPRouter, RouterConfig, save_router

    torch.manual_seed(seed)
    router = MiniMLPRouter(RouterConfig(vocab_size=len(tokenizer), labels=tuple(labels), embed_dim=8, hidden=16,
                                        pooling="weighted"))
    with torch.no_grad():
        router.token_score.weight.normal_(0, 1.0)  # exercise the weighted pooling, not the mean
    save_router(router, folder)


def write_tiny_replay(folder: Path) -> None:
    """A few prompts per label, so the router can learn a new adapter (add-adapter, the page's upload)."""
    from dlp.router_extend import write_replay

    labels = ["base", *NAMES]
    items = [(f"what is {w} two three", i) for i, w in enumerate(labels) for _ in range(3)]
    items += [("translate the food review", labels.index("beta")), ("how many apples", labels.index("alpha"))] * 3
    write_replay(folder, items, labels, per_label=10)


def build(root: Path) -> Path:
    """Write base model, adapters, router and manifest under ``root``; return the manifest path."""
    root = Path(root)
    tok = make_tokenizer()
    model = make_model(tok)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    colors = ["#1f77b4", "#2ca02c", "#d62728"]
    for i, name in enumerate(NAMES):
        make_adapter(model, root / "adapters" / name, seed=10 + i, targets=("q_proj", "v_proj", "o_proj") if i != 2
                     else ("q_proj", "k_proj", "down_proj"), r=4 if i != 1 else 2)
    make_router(tok, root / "router")
    write_tiny_replay(root / "router")
    manifest = {
        "base": {"name": "tiny-llama", "sources": [{"kind": "path", "value": "base"}]},
        "adapters": [{"name": n, "path": f"adapters/{n}", "task": f"task {n}", "color": colors[i],
                      "description": f"random adapter {n}", "examples": [f"what is {n} two three"]}
                     for i, n in enumerate(NAMES)],
        "mixed_examples": ["translate the food review"],
        "router": {"path": "router"},
        "defaults": {"top_p": 0.8, "max_new_tokens": 8, "temperature": 0.0, "max_prompt_tokens": 64},
    }
    path = root / "adapters_manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path
