"""Labels taught from examples: a head per label on the router's features and frozen sentence vectors."""

import json

import pytest
import torch

import tiny
from dlp.router import MiniMLPRouter, RouterConfig, load_router, save_router
from dlp.router_extend import add_label, remove_label, teach, with_new_label, without_label, write_replay
from dlp.sentence_vectors import shared

OLD = [("what is two plus three", 0), ("how many apples and five", 0), ("translate french love food", 1),
       ("french translate the cat", 1), ("review good great movie", 2), ("bad terrible food review", 2)]
NEW = ["write a sql query on the orders table", "select rows from the users table", "sql join two tables",
       "count rows in a table with sql", "a query to delete duplicate rows"]
PROMPTS = ["what is two plus three", "translate the food review", "select every order from the table", "hello"]


@pytest.fixture()
def router():
    torch.manual_seed(0)
    return MiniMLPRouter(RouterConfig(vocab_size=len(tiny.make_tokenizer()), labels=("math", "fr", "sent"),
                                      embed_dim=16, hidden=32)).eval()


def _replay(router_labels):
    return [{"prompt": p, "target": {router_labels[y]: 1.0}} for p, y in OLD * 4]


def test_sentence_vectors_carry_meaning():
    vec = shared()
    a, b, c = vec(["Write a SQL query that lists customers.", "select all rows from the orders table",
                   "my cake recipe needs more sugar"])
    assert vec.table.shape == (30522, vec.dim) and torch.allclose(a.norm(), torch.tensor(1.0))
    assert a @ b > a @ c, "two database requests sit closer than a database request and a recipe"


def test_a_taught_label_leaves_the_others_relative_probabilities_exactly(router):
    tok = tiny.make_tokenizer()
    before = router.probs(tok, PROMPTS)
    taught = teach(with_new_label(router, "sql"), tok, _replay(router.cfg.labels), NEW, "sql")
    after = taught.probs(tok, PROMPTS)
    assert taught.cfg.labels == ("math", "fr", "sent", "sql") and taught.cfg.heads == ("sql",)
    torch.testing.assert_close(after[:, :3] / (1 - after[:, 3:]), before)  # only the new logit was added
    assert taught.embed.weight.data_ptr() == router.embed.weight.data_ptr(), "the table is shared, not copied"
    assert taught.probs(tok, NEW)[:, 3].min() > 0.5
    assert sum(p.numel() for p in taught.heads.parameters()) < 100_000
    with pytest.raises(ValueError, match="label heads"):
        taught(*taught.ids(tok, PROMPTS))
    torch.testing.assert_close(without_label(taught, "sql").probs(tok, PROMPTS), before)


def test_two_heads_save_load_and_remove_either(router, tmp_path):
    tok = tiny.make_tokenizer()
    save_router(router, tmp_path)
    write_replay(tmp_path, OLD * 4, list(router.cfg.labels))
    first = add_label(tmp_path, tok, "sql", NEW)
    second = add_label(tmp_path, tok, "recipes", ["bake a cake with sugar", "a recipe for soup", "cook pasta",
                                                  "how long to roast a chicken", "a cookie recipe"])
    again = load_router(tmp_path)
    assert again.cfg.heads == ("sql", "recipes")
    torch.testing.assert_close(again.probs(tok, PROMPTS), second.probs(tok, PROMPTS))
    assert json.loads((tmp_path / "router_config.json").read_text())["added"] == ["sql", "recipes"]
    # The earlier label removed: the others keep their relative probabilities.
    keep = without_label(second, "sql").probs(tok, PROMPTS)
    full = second.probs(tok, PROMPTS)
    torch.testing.assert_close(keep, full[:, [0, 1, 2, 4]] / full[:, [0, 1, 2, 4]].sum(-1, keepdim=True))
    remove_label(tmp_path, "recipes")  # the newest: the files as they were
    torch.testing.assert_close(load_router(tmp_path).probs(tok, PROMPTS), first.probs(tok, PROMPTS))
    remove_label(tmp_path, "sql")
    torch.testing.assert_close(load_router(tmp_path).probs(tok, PROMPTS), router.probs(tok, PROMPTS))


def test_a_row_label_is_still_removed(router):
    """Routers taught before label heads existed hold a label as a row of the output layer."""
    tok = tiny.make_tokenizer()
    rows = without_label(router, "fr")
    full = router.probs(tok, PROMPTS)
    torch.testing.assert_close(rows.probs(tok, PROMPTS), full[:, [0, 2]] / full[:, [0, 2]].sum(-1, keepdim=True))
    assert rows.cfg.labels == ("math", "sent")
