"""Folders and hub ids load through the same code; the GGUF path caches its conversion."""


import pytest
import torch

import tiny
from dlp.base_model import BaseSource, load_base
from dlp.errors import DLPError

CPU = (torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    tok = tiny.make_tokenizer()
    model = tiny.make_model(tok, seed=3)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model


def _same_logits(model_a, model_b):
    ids = torch.tensor([[3, 8, 13, 21]])
    with torch.no_grad():
        torch.testing.assert_close(model_a(ids).logits, model_b(ids).logits)


def test_local_folder(saved_tiny):
    folder, model = saved_tiny
    loaded = load_base([BaseSource("path", str(folder))], *CPU)
    _same_logits(loaded.model, model)
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_hub_id_offline_from_a_hub_cache(saved_tiny, tmp_path, monkeypatch):
    """A hub id resolves through huggingface_hub's cache layout, as on a Space after download."""
    folder, model = saved_tiny
    tiny.hub_cache(folder, tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    loaded = load_base([BaseSource("hub", "tiny-org/tiny-llama")], *CPU)
    _same_logits(loaded.model, model)


def test_sources_are_tried_in_order_and_failures_reported(saved_tiny, tmp_path):
    folder, _ = saved_tiny
    sources = [BaseSource("gguf_package", "no_such_package_xyz", "m.gguf"), BaseSource("path", str(tmp_path / "none")),
               BaseSource("path", str(folder))]
    assert load_base(sources, *CPU).source == sources[2]
    with pytest.raises(DLPError) as err:
        load_base(sources[:2], *CPU)
    assert "no_such_package_xyz" in str(err.value) and "config.json missing" in str(err.value)
