import pytest
import torch

import tiny
from dlp.router import MiniMLPRouter, RouterConfig, confusion, load_router, save_router, train_router
from dlp.errors import DLPError


def test_train_save_load_roundtrip(tmp_path):
    tok = tiny.make_tokenizer()
    data = [("what is two plus three", 0), ("how many apples and five", 0), ("translate french love food", 1),
            ("french translate the cat", 1), ("review good great movie", 2), ("bad terrible food review", 2)] * 20
    router = train_router(tok, data, ["math", "fr", "sent"], epochs=15, batch_size=16, lr=5e-3, progress=False,
                          embed_dim=16, hidden=32)
    matrix = confusion(router, tok, data[:6])
    assert matrix.diag().sum() == 6
    save_router(router, tmp_path)
    again = load_router(tmp_path)
    prompts = [p for p, _ in data[:6]]
    torch.testing.assert_close(router.probs(tok, prompts), again.probs(tok, prompts))
    assert again.cfg.labels == ("math", "fr", "sent")


def test_weighted_pooling_is_a_weighted_mean():
    tok = tiny.make_tokenizer()
    router = MiniMLPRouter(RouterConfig(vocab_size=len(tok), labels=("a", "b"), embed_dim=4, hidden=8,
                                        pooling="weighted")).eval()
    with torch.no_grad():
        router.token_score.weight.normal_()
    ids, offsets = torch.tensor([5, 9, 12, 7]), torch.tensor([0, 3])
    w = router.token_score.weight[ids, 0].exp()
    e = router.embed.weight[ids]
    first = (w[:3, None] * e[:3]).sum(0) / w[:3].sum()
    torch.testing.assert_close(router(ids, offsets)[0], router.mlp(first))
    torch.testing.assert_close(router(ids, offsets)[1], router.mlp(e[3]))


def test_default_size_is_about_five_million():
    router = MiniMLPRouter(RouterConfig(vocab_size=49152, labels=tuple("abcdef")))
    assert 4.5e6 < sum(p.numel() for p in router.parameters()) < 5.5e6


def test_missing_or_broken_router(tmp_path):
    with pytest.raises(DLPError, match="No router"):
        load_router(tmp_path)
    (tmp_path / "router_config.json").write_text("{}")
    (tmp_path / "router.safetensors").write_bytes(b"xx")
    with pytest.raises(DLPError, match="cannot be loaded"):
        load_router(tmp_path)


def test_soft_targets_split_the_probability():
    """A two-skill prompt trained at 0.5 / 0.5 keeps both labels near half."""
    tok = tiny.make_tokenizer()
    data = [("what is two plus three", 0), ("how many apples and five", 0), ("translate french love food", 1),
            ("french translate the cat", 1), ("python code function list", {0: 0.5, 1: 0.5})] * 30
    router = train_router(tok, data, ["a", "b"], epochs=20, batch_size=16, lr=5e-3, progress=False,
                          embed_dim=16, hidden=32, token_dropout=0.0)
    p = router.probs(tok, ["python code function list", "what is two plus three"])
    assert 0.3 < float(p[0, 0]) < 0.7
    assert float(p[1, 0]) > 0.8


def test_embeddings_are_stored_in_float16(tmp_path):
    from safetensors.torch import load_file

    tok = tiny.make_tokenizer()
    router = MiniMLPRouter(RouterConfig(vocab_size=len(tok), labels=("a", "b"), embed_dim=8, hidden=8,
                                        pooling="weighted"))
    save_router(router, tmp_path)
    stored = load_file(tmp_path / "router.safetensors")
    assert stored["embed.weight"].dtype == torch.float16 and stored["mlp.1.weight"].dtype == torch.float32
    assert load_router(tmp_path).embed.weight.dtype == torch.float32


def test_projected_embeddings_keep_neighbours_and_start_the_table():
    """The base model's embeddings on their principal axes: unit scale, and a token's nearest neighbour
    stays its nearest neighbour; train_router starts its token table there."""
    from dlp.router import projected_embeddings

    torch.manual_seed(0)
    centres = torch.randn(6, 40) * 3
    table = centres.repeat_interleave(5, 0) + 0.1 * torch.randn(30, 40)  # 6 clusters of 5 "words"
    z = projected_embeddings(table, 8)
    assert z.shape == (30, 8) and abs(float(z.std()) - 1.0) < 1e-4
    dist = torch.cdist(z, z) + torch.eye(30) * 1e9
    assert (dist.argmin(1) // 5 == torch.arange(30) // 5).all()
    tok = tiny.make_tokenizer()
    init = projected_embeddings(torch.randn(len(tok), 40), 8)
    router = train_router(tok, [("what is two", 0), ("translate the food review", 1)], ["base", "alpha"],
                          epochs=1, lr=1e-9, progress=False, embed_dim=8, hidden=16, embed_init=init)
    torch.testing.assert_close(router.embed.weight, init, rtol=1e-4, atol=1e-4)
