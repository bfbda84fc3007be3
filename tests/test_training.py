"""Adapter training on a tiny model: a run saves a PEFT folder, and a resumed run continues it."""

import json

import pytest
import torch
from safetensors.torch import load_file

import tiny
from dlp import training
from dlp.tasks import Example


@pytest.fixture
def tiny_task(monkeypatch):
    rows = [Example(f"what is {a} and {b}", f"the sum is {a} {b}", {}) for a in range(10) for b in range(3)]
    monkeypatch.setattr(training, "load_examples", lambda task, split, seed=0: rows)


def _weights(folder):
    return load_file(folder / "adapter_model.safetensors")


def test_resume_continues_a_saved_adapter_and_keeps_its_history(tmp_path, tiny_task):
    tok = tiny.make_tokenizer()
    model = tiny.make_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = training.TrainConfig(steps=3, batch_size=4, max_len=32, rank=2, alpha=4, targets=("q_proj", "v_proj"))
    first = training.train_adapter(model, tok, "math", tmp_path / "first", cfg, progress=False)
    assert first["steps_done"] == 3 and first["history"] == []

    # The config asks for another rank and targets: the saved adapter's win, since its weights go on.
    again = training.TrainConfig(steps=2, batch_size=4, max_len=32, rank=8, targets=("o_proj",), lr=1e-3, seed=1)
    second = training.train_adapter(model, tok, "math", tmp_path / "second", again, progress=False,
                                    resume_from=tmp_path / "first")
    assert (second["config"]["rank"], second["config"]["targets"]) == (2, ("q_proj", "v_proj"))
    assert [h["steps_done"] for h in second["history"]] == [3]
    assert json.loads((tmp_path / "second" / "train_log.json").read_text())["info"]["history"][0]["config"]["steps"] == 3
    card = (tmp_path / "second" / "README.md").read_text()
    assert "after 3 steps x 4 at lr 0.0008" in card and "--resume-from assets/adapters --lr 0.001 --seed 1" in card

    a, b = _weights(tmp_path / "first"), _weights(tmp_path / "second")
    assert a.keys() == b.keys()
    # LoRA's B starts at zero: a fresh run's B after 2 steps is tiny; a resumed one starts from the saved B.
    key = next(k for k in a if "lora_B" in k)
    assert not torch.equal(a[key], b[key])
    assert torch.allclose(a[key].float(), b[key].float(), atol=0.05)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the base came back changed"


def test_reply_loss_matches_the_models_own_loss():
    from peft import LoraConfig, get_peft_model

    tok = tiny.make_tokenizer()
    model = get_peft_model(tiny.make_model(tok), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    rows = [training.encode(tok, Example(p, r, {}), 32) for p, r in
            (("what is two and three", "five"), ("translate the food review please", "good food love it"))]
    batch = training._batch(rows, tok.pad_token_id)
    assert torch.allclose(training.reply_loss(model, batch), model(**batch).loss, atol=1e-5)


def test_micro_batches_add_up_to_the_whole_batchs_gradient():
    from peft import LoraConfig, get_peft_model

    tok = tiny.make_tokenizer()
    model = get_peft_model(tiny.make_model(tok), LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                            init_lora_weights=False))
    rows = [training.encode(tok, Example(f"what is {a} and {b} " * (a + 1), f"the sum is {a} {b}", {}), 48)
            for a in range(5) for b in range(2)]
    grads = []
    for micro in (len(rows), 3):
        model.zero_grad()
        loss = training.accumulate(model, rows, micro, tok.pad_token_id, torch.device("cpu"))
        grads.append((loss, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (whole, g_whole), (parts, g_parts) = grads
    assert torch.allclose(whole, parts, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_whole, g_parts))
