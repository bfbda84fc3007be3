"""The DLP plugin: a ~5M-parameter mini-MLP that classifies the whole prompt once.

Input is the base tokenizer's ids (no language model needed), mean-pooled through an embedding
bag, then a small MLP and a softmax over the adapters. A label taught later from a few example prompts
(``dlp.router_extend``) gets its logit from a small head of its own, which reads the MLP's last features beside
frozen sentence vectors (``dlp.sentence_vectors``): the router's table knows only its training tasks' words.
Saved as ``router.safetensors`` + ``router_config.json`` so it loads without pickle.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .errors import DLPError


@dataclass(frozen=True)
class RouterConfig:
    vocab_size: int  # the base tokenizer's vocabulary
    labels: tuple[str, ...]  # adapter names, in output order
    embed_dim: int = 96  # 49,152 x 96 = 4.7M of the ~5M parameters
    hidden: int = 384  # MLP width
    max_tokens: int = 512  # prompt tokens the router reads (the head of the prompt)
    pooling: str = "mean"  # "mean", or "weighted": a learned importance per token ("Python", "French")
    heads: tuple[str, ...] = ()  # the last labels: each one's logit from a label head (taught from examples)
    sentence_dim: int = 0  # the sentence vectors the label heads read beside the MLP's features
    head_hidden: int = 128


SENTENCE_SCALE = 4.0  # unit sentence vectors, brought near the size of the MLP's features


def label_head(cfg: RouterConfig) -> nn.Module:
    return nn.Sequential(nn.Linear(cfg.hidden + cfg.sentence_dim, cfg.head_hidden), nn.GELU(),
                         nn.Linear(cfg.head_hidden, 1))


def _run_head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``head(x)`` without nn.Module's call overhead: routing is on every request's path (~0.05 ms saved)."""
    first, _, last = head
    return F.linear(F.gelu(F.linear(x, first.weight, first.bias)), last.weight, last.bias)


class MiniMLPRouter(nn.Module):
    def __init__(self, cfg: RouterConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.EmbeddingBag(cfg.vocab_size, cfg.embed_dim, mode="sum" if cfg.pooling == "weighted" else "mean")
        if cfg.pooling == "weighted":
            self.token_score = nn.Embedding(cfg.vocab_size, 1)
            nn.init.zeros_(self.token_score.weight)  # starts as mean pooling
        self.mlp = nn.Sequential(
            nn.LayerNorm(cfg.embed_dim),
            nn.Linear(cfg.embed_dim, cfg.hidden),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, len(cfg.labels) - len(cfg.heads)),
        )
        self.heads = nn.ModuleList(label_head(cfg) for _ in cfg.heads)

    @classmethod
    def sharing(cls, other: "MiniMLPRouter", cfg: RouterConfig, heads: list[nn.Module],
                mlp: nn.Sequential | None = None) -> "MiniMLPRouter":
        """A router over ``other``'s token table and MLP (shared, not copied) with these label heads: a
        session's router costs its heads, not another 19 MB table."""
        router = cls.__new__(cls)
        nn.Module.__init__(router)
        router.cfg = cfg
        router.embed = other.embed
        if cfg.pooling == "weighted":
            router.token_score = other.token_score
        router.mlp = other.mlp if mlp is None else mlp
        router.heads = nn.ModuleList(heads)
        return router.eval()

    def pooled(self, flat_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(batch, embed_dim): each prompt's token vectors, averaged (or weighted by importance)."""
        if self.cfg.pooling != "weighted":
            return self.embed(flat_ids, offsets)
        if len(offsets) == 1 and not self.training:  # one prompt, as on the page: 3 ops instead of 9 (~0.07 ms)
            w = self.token_score.weight.index_select(0, flat_ids).squeeze(-1).clamp(-8, 8).exp()
            return ((w @ self.embed.weight.index_select(0, flat_ids)) / w.sum())[None]
        w = self.token_score(flat_ids).squeeze(-1).clamp(-8, 8).exp()  # (tokens,) importance of each token
        lengths = torch.diff(offsets, append=torch.tensor([flat_ids.numel()], device=offsets.device))
        bag = torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), lengths)  # (tokens,)
        total = torch.zeros(len(offsets), dtype=w.dtype, device=w.device).index_add_(0, bag, w)  # (B,)
        return self.embed(flat_ids, offsets, per_sample_weights=w) / total[:, None]  # (B, D) weighted mean

    def head_inputs(self, features: torch.Tensor, sentences: torch.Tensor) -> torch.Tensor:
        """What a label head reads: the MLP's last features (B, hidden) beside the sentence vectors."""
        return torch.cat([features, SENTENCE_SCALE * sentences], -1)

    def forward(self, flat_ids: torch.Tensor, offsets: torch.Tensor,
                sentences: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, n_adapters) from concatenated prompt ids and their start offsets; ``sentences``
        (batch, sentence_dim) is needed once the router has label heads."""
        if self.heads and sentences is None:
            raise ValueError("this router has label heads: pass the prompts' sentence vectors")
        h = self.features(self.pooled(flat_ids, offsets))
        last = self.mlp[-1]
        out = F.linear(h, last.weight, last.bias)  # (B, hidden) -> (B, N)
        if not self.heads:
            return out
        x = self.head_inputs(h, sentences)
        return torch.cat([out, *(_run_head(head, x) for head in self.heads)], -1)

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        """(batch, hidden): the MLP's last features, before its output layer."""
        if self.training:  # dropout on
            *body, _ = self.mlp
            for layer in body:
                pooled = layer(pooled)
            return pooled
        # Routing is on every request's path: functional calls skip nn.Module's per-call cost (~0.03 ms).
        norm, first, _, _, second, _, _ = self.mlp
        x = F.layer_norm(pooled, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        x = F.gelu(F.linear(x, first.weight, first.bias))
        return F.gelu(F.linear(x, second.weight, second.bias))

    def sentences(self, prompts: list[str]) -> torch.Tensor | None:
        """The prompts' sentence vectors, where label heads read them."""
        if not self.heads:
            return None
        from .sentence_vectors import shared

        return shared()(prompts)

    def ids(self, tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        fast = getattr(tokenizer, "backend_tokenizer", None)  # the Rust tokenizer itself: ~0.1 ms less per prompt
        encode = ((lambda p: fast.encode(p, add_special_tokens=False).ids) if fast is not None
                  else (lambda p: tokenizer(p, add_special_tokens=False)["input_ids"]))
        rows = [encode(p)[: self.cfg.max_tokens] or [0] for p in prompts]
        offsets = torch.tensor([0] + [len(r) for r in rows[:-1]]).cumsum(0)
        return torch.tensor([t for r in rows for t in r], dtype=torch.long), offsets

    @torch.inference_mode()
    def probs(self, tokenizer, prompts: list[str]) -> torch.Tensor:
        """(batch, n_adapters) probabilities."""
        self.eval()
        return torch.softmax(self(*self.ids(tokenizer, prompts), self.sentences(prompts)).float(), dim=-1)


def save_router(router: MiniMLPRouter, folder: Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The embedding tables are 95% of the parameters; float16 halves the file (a Space push refuses
    # files over 10 MB) and moves no probability by more than ~1e-3. The MLP stays float32.
    state = {k: (v.half() if k.startswith(("embed.", "token_score.")) else v).detach().contiguous()
             for k, v in router.state_dict().items()}
    save_file(state, folder / "router.safetensors")
    (folder / "router_config.json").write_text(json.dumps({**asdict(router.cfg), **(extra or {})}, indent=1))


def load_router(folder: Path) -> MiniMLPRouter:
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path, w_path = folder / "router_config.json", folder / "router.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise DLPError(f"No router in {folder} (router_config.json and router.safetensors expected)",
                       hint="train one with: python -m dlp train-router")
    try:
        raw = json.loads(cfg_path.read_text())
        fields = RouterConfig.__dataclass_fields__
        cfg = RouterConfig(**{k: (tuple(v) if k in ("labels", "heads") else v) for k, v in raw.items() if k in fields})
        router = MiniMLPRouter(cfg)
        router.load_state_dict({k: v.float() for k, v in load_file(w_path).items()})
    except Exception as exc:  # noqa: BLE001
        raise DLPError(f"Router in {folder} cannot be loaded: {str(exc).splitlines()[0]}",
                       hint="retrain it with: python -m dlp train-router") from None
    return router.eval()


def projected_embeddings(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The base model's input embeddings (vocab, hidden) on their ``dim`` principal axes, scaled to unit std.

    A router table that starts here gives every token a meaning before training, the tokens its training
    data never shows ("SQL", "SELECT") included: they sit near the words the base model relates them to,
    so a label taught from a few examples reaches prompts worded otherwise."""
    e = embeddings.detach().float()
    e = e - e.mean(0, keepdim=True)
    q = min(dim, *e.shape)  # a base narrower than the router's table fills the rest with zeros
    _, _, v = torch.pca_lowrank(e, q=q, center=False, niter=4)
    z = e @ v[:, :q]
    z = z / z.std()
    return torch.nn.functional.pad(z, (0, dim - q))


def train_router(tokenizer, train: list[tuple[str, int | dict[int, float]]], labels: list[str], epochs: int = 4,
                 batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True,
                 pooling: str = "weighted", token_dropout: float = 0.15, smoothing: float = 0.05,
                 embed_init: torch.Tensor | None = None, freeze_embed: bool = False, **sizes) -> MiniMLPRouter:
    """Cross-entropy on (prompt, target) pairs; a target is a label index or a soft mixture
    {index: share} (two-skill prompts are 0.5 / 0.5). Dropping random tokens during training keeps
    the router from leaning on one give-away token of the training templates. ``embed_init`` (vocab,
    embed_dim) replaces the random start of the token table (see :func:`projected_embeddings`)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    n = len(labels)
    router = MiniMLPRouter(RouterConfig(vocab_size=len(tokenizer), labels=tuple(labels), pooling=pooling, **sizes))
    if embed_init is not None:  # rows past the base's table (tokens added to the tokenizer) keep their random start
        rows = min(len(embed_init), router.cfg.vocab_size)
        with torch.no_grad():
            router.embed.weight[:rows] = embed_init[:rows]
    router.embed.weight.requires_grad_(not freeze_embed)
    opt = torch.optim.AdamW([p for p in router.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)

    def soft(target) -> torch.Tensor:
        t = torch.zeros(n)
        for i, share in ({target: 1.0} if isinstance(target, int) else target).items():
            t[i] = share
        return t / t.sum() * (1 - smoothing) + smoothing / n

    encoded = [(router.ids(tokenizer, [p])[0], soft(y)) for p, y in train]
    steps = epochs * ((len(encoded) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    router.train()
    bar = tqdm(total=steps, desc="train router", disable=not progress)
    for _ in range(epochs):
        rng.shuffle(encoded)
        for k in range(0, len(encoded), batch_size):
            chunk = encoded[k : k + batch_size]
            rows = [ids[torch.rand(len(ids)) >= token_dropout] for ids, _ in chunk]
            rows = [r if len(r) else ids[:1] for r, (ids, _) in zip(rows, chunk)]
            flat = torch.cat(rows)
            offsets = torch.tensor([0] + [len(r) for r in rows[:-1]]).cumsum(0)
            target = torch.stack([t for _, t in chunk])  # (B, n)
            loss = -(target * torch.log_softmax(router(flat, offsets), dim=-1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    router.embed.weight.requires_grad_(True)
    return router.eval()


def confusion(router: MiniMLPRouter, tokenizer, items: list[tuple[str, int]], batch: int = 256) -> torch.Tensor:
    """(n, n) counts: row = true adapter, column = router's top-1."""
    n = len(router.cfg.labels)
    matrix = torch.zeros((n, n), dtype=torch.long)
    for k in range(0, len(items), batch):
        chunk = items[k : k + batch]
        pred = router.probs(tokenizer, [p for p, _ in chunk]).argmax(-1)
        for (_, y), p in zip(chunk, pred.tolist()):
            matrix[y, p] += 1
    return matrix


def format_confusion(matrix: torch.Tensor, labels: list[str]) -> str:
    width = max(len(l) for l in labels) + 2
    head = " " * width + "".join(f"{l[:10]:>11}" for l in labels)
    rows = [f"{l:<{width}}" + "".join(f"{int(v):>11}" for v in matrix[i]) for i, l in enumerate(labels)]
    return "\n".join([head, *rows])
