"""Learned fusion: weights that say how much of each kept adapter to use, per layer or per token.

DLP-LoRA gives every kept adapter one weight for the whole answer. On a two-skill prompt that hands the
answer to one adapter or blends both into neither. Two learned alternatives, trained on composite
examples (``python -m dlp train-fusion``) over the frozen model and frozen adapters:

- :class:`LayerwiseWeights` (LoRA Soups' CAT, arXiv 2410.13025): one weight per layer and adapter. Still
  fixed for the whole answer, so a request costs what DLP's does.
- :class:`TokenGate` (LoRA-Flow, arXiv 2402.11455): a linear gate per layer reads the hidden state entering
  the layer and re-weighs the kept adapters at every token. It adds ``prior_strength`` times the router's
  log-weights to its logits: at 1 a zero gate is exactly DLP's ``renorm`` and training learns a
  correction to it; at 0 the router only says which adapters take part and the gate sets the whole mix
  (a skewed route, translate_fr 0.89 + sentiment 0.11, then no longer hides the second skill). With
  ``with_base`` the base model is always one of its options: after a SQuAD span both adapters stop,
  while the base model goes on to a new line.

Both know the adapters by name (``labels``, with ``base`` as a zero LoRA the gate can turn to); an adapter
they never saw gets weight 1 (layerwise) or no correction (token). The router's top-p set still says
which adapters take part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .fusion import _ACTIVE_PLAN

LAYERWISE_FILE, TOKEN_FILE = "layerwise.safetensors", "token_gate.safetensors"


class LayerwiseWeights(nn.Module):
    def __init__(self, labels: list[str], n_layers: int, init: float = 1.0):
        super().__init__()
        self.labels = list(labels)
        self.alpha = nn.Parameter(torch.full((n_layers, len(labels)), float(init)))

    def weights(self, layer: int | None, names: list[str]) -> torch.Tensor:
        """(len(names),) weights for one layer; 1.0 for a name it was not trained with."""
        if layer is None:
            return torch.ones(len(names), device=self.alpha.device)
        row = torch.cat([self.alpha[layer], self.alpha.new_ones(1)])
        idx = torch.tensor([self.labels.index(n) if n in self.labels else len(self.labels) for n in names],
                           device=self.alpha.device)
        return row[idx]


class TokenGate(nn.Module):
    def __init__(self, labels: list[str], n_layers: int, hidden: int, prior_strength: float = 1.0,
                 with_base: bool = False):
        super().__init__()
        self.labels = list(labels)
        self.prior_strength = float(prior_strength)  # how much of the router's log-weights the logits start from
        self.with_base = bool(with_base)  # "base" (no LoRA) is always an option, kept by the router or not
        self.weight = nn.Parameter(torch.zeros(n_layers, len(labels), hidden))
        self.bias = nn.Parameter(torch.zeros(n_layers, len(labels)))

    def logits(self, layer: int, hidden: torch.Tensor, names: list[str]) -> torch.Tensor:
        """(rows, T, len(names)) learned logits from the RMS-normalized hidden state; 0 for unknown names."""
        h = hidden.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        w = torch.cat([self.weight[layer], self.weight.new_zeros(1, self.weight.shape[-1])])
        b = torch.cat([self.bias[layer], self.bias.new_zeros(1)])
        idx = torch.tensor([self.labels.index(n) if n in self.labels else len(self.labels) for n in names],
                           device=w.device)
        return h @ w[idx].T + b[idx]


@dataclass
class Learned:
    """What an engine has of the learned methods (either may be missing: the method is then unavailable)."""

    layerwise: LayerwiseWeights | None = None
    token: TokenGate | None = None

    def available(self) -> list[str]:
        return [m for m, x in (("layerwise", self.layerwise), ("token", self.token)) if x is not None]


def _gate_hook(layer: int, last: int):
    def hook(module, args, kwargs):
        plan = _ACTIVE_PLAN.get()
        if plan is None or plan.token is None:
            return None
        tp = plan.token
        hidden = args[0] if args else kwargs["hidden_states"]
        logits = tp.prior[:, None, :] + tp.gate.logits(layer, hidden, tp.used)
        tp.weights[layer] = torch.softmax(logits, dim=-1)
        if tp.trace is not None:
            if layer == 0:
                tp.trace.append(torch.zeros_like(tp.weights[0][:, -1]))
            tp.trace[-1] += tp.weights[layer][:, -1].detach() / (last + 1)
        return None

    return hook


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", model)
    return inner.layers


def install_gate_hooks(model: nn.Module) -> None:
    """Pre-hooks on every decoder layer (idempotent); they do nothing unless a plan carries a token gate."""
    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        if not getattr(layer, "_dlp_gate_hook", False):
            layer.register_forward_pre_hook(_gate_hook(i, len(layers) - 1), with_kwargs=True)
            layer._dlp_gate_hook = True


def save(module: LayerwiseWeights | TokenGate, folder: Path, info: dict) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = LAYERWISE_FILE if isinstance(module, LayerwiseWeights) else TOKEN_FILE
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    meta = {"labels": json.dumps(module.labels)}
    if isinstance(module, TokenGate):
        meta.update(prior_strength=str(module.prior_strength), with_base=json.dumps(module.with_base))
    save_file(tensors, str(folder / name), metadata=meta)
    (folder / (name.split(".")[0] + ".json")).write_text(json.dumps({"labels": module.labels, **info}, indent=1))
    return folder / name


def load(folder: Path | None, device: torch.device | None = None) -> Learned:
    """The learned methods found in ``folder`` (none found: an empty :class:`Learned`)."""
    from safetensors import safe_open

    learned = Learned()
    if folder is None or not Path(folder).is_dir():
        return learned
    for name in (LAYERWISE_FILE, TOKEN_FILE):
        path = Path(folder) / name
        if not path.is_file():
            continue
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
            labels = json.loads(meta["labels"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        if name == LAYERWISE_FILE:
            module = LayerwiseWeights(labels, tensors["alpha"].shape[0])
        else:
            module = TokenGate(labels, *tensors["weight"].shape[::2], float(meta.get("prior_strength", 1.0)),
                               json.loads(meta.get("with_base", "false")))
        module.load_state_dict(tensors)
        module.requires_grad_(False)
        module.to(device or "cpu")
        if name == LAYERWISE_FILE:
            learned.layerwise = module
        else:
            learned.token = module
    return learned
