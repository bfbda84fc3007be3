"""Reading standard PEFT LoRA folders and checking that they fit the base model.

The folder format is PEFT's own (``adapter_config.json`` + ``adapter_model.safetensors``), read
with PEFT's ``LoraConfig`` and ``load_peft_weights``; pickled ``.bin`` weights are refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import DLPError
from .fusion import LoRAWeights

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    folder: Path
    rank: int  # the most common rank
    alpha: float
    targets: tuple[str, ...]  # module suffixes, e.g. q_proj
    n_params: int
    size_bytes: int  # on disk
    strength: float = 1.0  # the manifest's calibration: every LoRA scale is multiplied by it


def resolve_folder(location: str, is_hub: bool, max_bytes: int | None = None) -> Path:
    """A local folder, or a hub repo's adapter files downloaded into the hub cache. With ``max_bytes`` (a
    visitor's hub id) the weights' size is asked of the hub first, so a huge file is never downloaded."""
    if not is_hub:
        return Path(location)
    try:
        from huggingface_hub import HfApi, snapshot_download

        if max_bytes is not None:
            files = HfApi().model_info(location, files_metadata=True).siblings or []
            size = sum(f.size or 0 for f in files if f.rfilename == "adapter_model.safetensors")
            if size > max_bytes:
                raise DLPError(f"{location}: adapter_model.safetensors is {size / 2**20:.0f} MB; the limit is "
                               f"{max_bytes / 2**20:.0f} MB")
        patterns = ["adapter_config.json", "adapter_model.safetensors", "README.md"] if max_bytes is not None \
            else ["adapter_config.json", "*.safetensors", "README.md"]
        return Path(snapshot_download(location, allow_patterns=patterns))
    except DLPError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, ...
        raise DLPError(f"Could not fetch adapter '{location}' from the hub: {str(exc).splitlines()[0]}",
                       hint="offline, use a local folder (a manifest 'path') or upload the files") from None


def read_adapter(name: str, folder: Path, model: nn.Module) -> tuple[AdapterInfo, dict[str, LoRAWeights]]:
    """Module name -> LoRA pair, validated against ``model``; raises DLPError naming the problem."""
    from peft import LoraConfig
    from peft.utils import load_peft_weights

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise DLPError(f"Adapter '{name}': no adapter_config.json in {folder}",
                       hint="point the manifest at a PEFT LoRA folder (save_pretrained output)")
    weights_file = folder / "adapter_model.safetensors"
    if not weights_file.is_file():
        pickled = " (only a pickled adapter_model.bin is there; convert it to safetensors)" if (
            folder / "adapter_model.bin").exists() else ""
        raise DLPError(f"Adapter '{name}': adapter_model.safetensors is missing in {folder}{pickled}")
    try:
        cfg = LoraConfig.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001
        raise DLPError(f"Adapter '{name}': adapter_config.json is not a LoRA config ({str(exc).splitlines()[0]})") from None
    if getattr(cfg, "peft_type", None) is not None and str(getattr(cfg.peft_type, "value", cfg.peft_type)) != "LORA":
        raise DLPError(f"Adapter '{name}' is a {cfg.peft_type} adapter; only LoRA is supported")
    if getattr(cfg, "use_dora", False):
        raise DLPError(f"Adapter '{name}' uses DoRA, which this fusion does not implement")
    try:
        state = load_peft_weights(str(folder), device="cpu")
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt file
        raise DLPError(f"Adapter '{name}': cannot read {weights_file.name} ({str(exc).splitlines()[0]})",
                       hint="the file is corrupt or truncated; retrain or re-download it") from None

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        m = _KEY.match(key)
        if m is None:
            raise DLPError(f"Adapter '{name}': unexpected tensor '{key}' (only LoRA A/B weights are supported)")
        pairs.setdefault(m["module"], {})[m["ab"]] = tensor
    if not pairs:
        raise DLPError(f"Adapter '{name}': the weights file holds no LoRA tensors")

    if not torch.isfinite(torch.cat([t.reshape(-1) for t in state.values()])).all():  # one pass, not 2 per module
        bad = next(k for k, t in state.items() if not torch.isfinite(t).all())
        raise DLPError(f"Adapter '{name}': '{_KEY.match(bad)['module']}' holds NaN or infinite values")

    modules = dict(model.named_modules())
    param = next(model.parameters())
    out: dict[str, LoRAWeights] = {}
    ranks = []
    for module_name, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise DLPError(f"Adapter '{name}': '{module_name}' has lora_{''.join(ab)} but not both A and B")
        target = modules.get(module_name)
        base_linear = getattr(target, "base", target)
        if not isinstance(base_linear, nn.Linear):
            raise DLPError(f"Adapter '{name}' targets '{module_name}', which this base model does not have",
                           hint="the adapter was trained for another base model")
        A, B = ab["A"], ab["B"]
        r = A.shape[0]
        if A.shape != (r, base_linear.in_features) or B.shape != (base_linear.out_features, r):
            raise DLPError(
                f"Adapter '{name}': '{module_name}' has A {tuple(A.shape)}, B {tuple(B.shape)} but the base layer is "
                f"{base_linear.in_features} -> {base_linear.out_features}",
                hint="the adapter was trained for another base model")
        alpha = _pattern(cfg.alpha_pattern, module_name, cfg.lora_alpha)
        scale = alpha / math.sqrt(r) if cfg.use_rslora else alpha / r
        out[module_name] = LoRAWeights(A.to(param.device, param.dtype), B.to(param.device, param.dtype), float(scale))
        ranks.append(r)
    info = AdapterInfo(
        name=name, folder=folder, rank=max(set(ranks), key=ranks.count), alpha=float(cfg.lora_alpha),
        targets=tuple(sorted({k.rsplit(".", 1)[-1] for k in out})),
        n_params=sum(w.A.numel() + w.B.numel() for w in out.values()),
        size_bytes=weights_file.stat().st_size,
    )
    return info, out


def _pattern(pattern: dict | None, module_name: str, default: float) -> float:
    """PEFT's alpha_pattern: a key matching the end of the module name overrides the default."""
    for key, value in (pattern or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", module_name):
            return float(value)
    return float(default)
