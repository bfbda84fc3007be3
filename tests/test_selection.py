import pytest
import torch

from dlp.errors import DLPError
from dlp.selection import fusion_weights, kept_indices, select

NAMES = ["a", "b", "c", "d"]


def test_smallest_set_reaching_p():
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])
    assert kept_indices(probs, 0.5) == [1]
    assert kept_indices(probs, 0.51) == [1, 2]
    assert kept_indices(probs, 0.8) == [1, 2]
    assert kept_indices(probs, 0.81) == [1, 2, 0]  # tie 0.1/0.1: lower index first


def test_p_one_keeps_everything_despite_float_error():
    probs = torch.softmax(torch.tensor([1.0, 2.0, 3.0, 0.5]), 0)
    assert sorted(kept_indices(probs, 1.0)) == [0, 1, 2, 3]


def test_always_at_least_one():
    probs = torch.tensor([0.97, 0.01, 0.01, 0.01])
    assert kept_indices(probs, 0.05) == [0]


def test_top_k_caps_the_count():
    probs = torch.tensor([0.3, 0.3, 0.2, 0.2])
    assert kept_indices(probs, 1.0, top_k=2) == [0, 1]


def test_renorm_weights_sum_to_one_and_keep_ratios():
    sel = select(torch.tensor([0.6, 0.2, 0.15, 0.05]), NAMES, top_p=0.8)
    assert list(sel) == ["a", "b"]
    assert sel["a"] == pytest.approx(0.75) and sel["b"] == pytest.approx(0.25)


def test_softmax_variant_flattens_weights():
    w = fusion_weights(torch.tensor([0.8, 0.2]), [0, 1], mode="softmax")
    assert w[0] == pytest.approx(torch.softmax(torch.tensor([0.8, 0.2]), 0)[0].item())
    assert 0.5 < w[0] < 0.8 and sum(w.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.01, float("nan")])
def test_bad_top_p(p):
    with pytest.raises(DLPError, match="top-p"):
        kept_indices(torch.tensor([0.5, 0.5]), p)


def test_bad_top_k():
    with pytest.raises(DLPError, match="top-k"):
        kept_indices(torch.tensor([0.5, 0.5]), 0.9, top_k=-1)


def test_max_weighting_keeps_each_adapter_strength():
    from dlp.selection import fusion_weights

    probs = torch.tensor([0.5, 0.45, 0.05])
    w = fusion_weights(probs, [0, 1], "max")
    assert w[0] == pytest.approx(1.0) and w[1] == pytest.approx(0.9)
    assert fusion_weights(probs, [0], "max") == {0: pytest.approx(1.0)}


def test_min_weight_drops_tails_and_reweights():
    """A departure from plain top-p, off by default: tails under the minimum leave the mixture."""
    probs = torch.tensor([0.80, 0.15, 0.04, 0.01])
    names = ["a", "b", "c", "d"]
    plain = select(probs, names, top_p=0.99)
    assert list(plain) == ["a", "b", "c"]
    floored = select(probs, names, top_p=0.99, min_weight=0.1)
    assert list(floored) == ["a", "b"] and sum(floored.values()) == pytest.approx(1.0)
    assert select(torch.tensor([0.4, 0.3, 0.3]), ["a", "b", "c"], top_p=1.0, min_weight=0.5) == {"a": 1.0}
    with pytest.raises(DLPError):
        select(probs, names, min_weight=1.5)
