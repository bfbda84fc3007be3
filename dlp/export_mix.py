"""A mixture of loaded adapters written as one PEFT LoRA folder, for engines that serve one adapter per request.

The combination is PEFT's exact ``cat``: the adapters' A matrices stacked (rank = the sum of their ranks) and
their B matrices side by side, each B multiplied by its weight and LoRA scale, so the folder's own scale is 1
(``lora_alpha = r``). ``W x + B_cat A_cat x`` then equals ``W x + sum_i w_i scale_i B_i A_i x``, the fused
layer's output for that mixture, to float rounding. A module that only some adapters adapt gets zero rows
for the others, so every module has the same rank (no ``rank_pattern`` needed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from . import compute
from .errors import DLPError
from .fusion import fused_layers
from .manifest import RESERVED as BASE

_ITEM = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_mix(text: str) -> dict[str, float]:
    """``"code=0.6,math=0.4"`` -> {"code": 0.6, "math": 0.4}; a clear error for anything else."""
    mixture = {}
    for part in (text or "").split(","):
        m = _ITEM.match(part)
        if not m:
            raise DLPError(f"Cannot read '{part.strip()}' in the mix '{text}'",
                           hint='write name=weight pairs separated by commas, e.g. "code=0.6,math=0.4"')
        if m[1] in mixture:
            raise DLPError(f"'{m[1]}' appears twice in the mix '{text}'")
        mixture[m[1]] = float(m[2])
    if not any(w > 0 for n, w in mixture.items() if n != BASE):
        raise DLPError(f"The mix '{text}' gives no adapter a weight above 0")
    return mixture


def combined_weights(engine, mixture: dict[str, float], scope=None) -> tuple[dict[str, torch.Tensor], int]:
    """PEFT state dict of the ``cat`` combination, and its rank."""
    mixture = {n: w for n, w in engine.check_mixture(mixture, scope).items() if n != BASE}
    layers = {k: l for k, l in fused_layers(engine.model).items() if any(n in l.loras for n in mixture)}
    ranks = {n: max(l.loras[n].A.shape[0] for l in layers.values() if n in l.loras) for n in mixture}
    state = {}
    for key, layer in sorted(layers.items()):
        a_parts, b_parts = [], []
        for n, w in mixture.items():
            lora = layer.loras.get(n)
            A = torch.zeros(ranks[n], layer.in_features)
            B = torch.zeros(layer.out_features, ranks[n])
            if lora is not None:
                r = lora.A.shape[0]
                A[:r] = lora.A.detach().float().cpu()
                B[:, :r] = lora.B.detach().float().cpu() * (w * lora.scale)
            a_parts.append(A)
            b_parts.append(B)
        state[f"base_model.model.{key}.lora_A.weight"] = torch.cat(a_parts, 0).contiguous()
        state[f"base_model.model.{key}.lora_B.weight"] = torch.cat(b_parts, 1).contiguous()
    return state, sum(ranks.values())


def export_mix(engine, mixture: dict[str, float], out: Path, scope=None) -> Path:
    """Write ``out/`` (adapter_config.json, adapter_model.safetensors, README.md); returns the folder."""
    from safetensors.torch import save_file

    state, rank = compute.light(combined_weights, engine, mixture, scope)  # small tensors: here, on one thread
    targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
              "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
              "base_model_name_or_path": engine.manifest.base_name, "inference_mode": True}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=1))
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    used = {n: w for n, w in mixture.items() if w > 0}
    sources = "\n".join(f"- `{n}` at weight {w:g}" + (f" ({engine.adapters[n].folder})" if n in engine.adapters else "")
                        for n, w in used.items())
    (out / "README.md").write_text(
        f"# A mixture of LoRA adapters, exported by DLP-LoRA Studio\n\n"
        f"Base model: **{engine.manifest.base_name}**. The exact `cat` combination of\n\n{sources}\n\n"
        f"rank {rank} (the sum of the ranks), `lora_alpha` = r (scale 1): each adapter's weight and LoRA scale "
        f"are folded into its B matrix, so this one adapter gives the same output as the fused mixture. "
        f"`base` in a mixture is no adapter: its weight is not part of the export. The sources' data and "
        f"licenses are on their own cards.\n", encoding="utf-8")
    return out
