"""Frozen word vectors from a sentence encoder: what lets a label taught from a few examples generalize.

The router's own token table knows only the words of its seven training tasks, so "SQL" or "SELECT" mean
nothing to it and a label taught from 8 SQL requests reaches 1 of 12 others. all-MiniLM-L6-v2's embedding
layer knows general English. Its rows are precomputed per wordpiece (``scripts/build_sentence_vectors.py``),
so a prompt's vector is one tokenizer call and one embedding-bag, a fraction of a millisecond, and the
encoder's transformer layers are never run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from .errors import DLPError

FOLDER = Path(__file__).resolve().parent.parent / "assets" / "sentence_vectors"
MAX_WORDPIECES = 128  # the encoder's own limit; the head of a long prompt says what it asks


class SentenceVectors:
    def __init__(self, folder: Path = FOLDER):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file() or not (folder / "vectors.safetensors").is_file():
            raise DLPError(f"No sentence vectors in {folder} (tokenizer.json and vectors.safetensors expected)",
                           hint="build them with: python scripts/build_sentence_vectors.py")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_WORDPIECES)
        self.table = load_file(folder / "vectors.safetensors")["vectors"].float().numpy()  # (wordpieces, dim)

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(batch, dim) unit vectors: the mean of each text's wordpiece rows."""
        # numpy, not torch: a few tiny ops per prompt, where torch's per-op overhead would be most of the time
        pooled = np.stack([self.table[self.tokenizer.encode(t, add_special_tokens=False).ids or [0]].mean(0)
                           for t in texts])
        pooled /= np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return torch.from_numpy(pooled)

@functools.lru_cache(maxsize=4)
def shared(folder: Path = FOLDER) -> SentenceVectors:
    """One table per folder for the whole process: every session's router reads the same frozen rows."""
    return SentenceVectors(folder)
