"""sum, layer-wise and token-gated fusion against hand-computed references, and training them on a tiny stack."""

import pytest
import torch

import tiny
from dlp.fusion import FusedLoRALinear, LoRAWeights, build_plan
from dlp.fusion_methods import method_mixture
from dlp.learned_fusion import Learned, LayerwiseWeights, TokenGate, install_gate_hooks, load, save


def _pairs():
    torch.manual_seed(0)
    return {n: LoRAWeights(torch.randn(r, 16), torch.randn(12, r), s) for n, r, s in [("a", 4, 2.0), ("b", 2, 0.5)]}


def _reference(base, pairs, x, coefs):
    ref = base(x)
    for n, c in coefs.items():
        ref = ref + c * pairs[n].scale * (x @ pairs[n].A.T @ pairs[n].B.T)
    return ref


def test_sum_and_layerwise_weights_per_row_and_layer():
    pairs = _pairs()
    layers = {}
    for i in range(2):
        layer = FusedLoRALinear(torch.nn.Linear(16, 12), f"model.layers.{i}.self_attn.q_proj")
        layer.loras.update(pairs)
        layers[layer.key] = layer
    lw = LayerwiseWeights(["a", "b", "base"], n_layers=2)
    with torch.no_grad():
        lw.alpha.copy_(torch.tensor([[0.9, 1.3, 0.0], [0.2, 1.7, 0.0]]))
    selected = {"a": 0.6, "b": 0.3, "base": 0.1}
    summed, m1 = method_mixture("sum", selected)
    layered, m2 = method_mixture("layerwise", selected)
    assert summed == {"a": 1.0, "b": 1.0} and m1 == "renorm" and m2 == "layerwise"
    mixtures, methods = [summed, layered, {"a": 1.0}], [m1, m2, "renorm"]
    x = torch.randn(3, 5, 16)
    with torch.no_grad(), build_plan(layers, mixtures, methods=methods, learned=Learned(layerwise=lw)).applied():
        for i, (key, layer) in enumerate(layers.items()):
            y = layer(x)
            torch.testing.assert_close(y[0], _reference(layer.base, pairs, x[0], {"a": 1.0, "b": 1.0}))
            a, b = lw.alpha[i, 0].item(), lw.alpha[i, 1].item()
            torch.testing.assert_close(y[1], _reference(layer.base, pairs, x[1], {"a": a, "b": b}))
            torch.testing.assert_close(y[2], _reference(layer.base, pairs, x[2], {"a": 1.0}))


def test_one_kept_adapter_is_the_router_pick_for_every_method():
    for method in ("renorm", "layerwise", "token"):
        assert method_mixture(method, {"a": 0.9, "base": 0.1}) == ({"a": 0.9, "base": 0.1}, "renorm")


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    return tiny.two_adapters(tmp_path_factory.mktemp("learned"))


def _gated_copy(model, root):
    fused, layers = tiny.fused_copy(model, root)
    install_gate_hooks(fused)
    gate = TokenGate(["a", "b", "base"], n_layers=2, hidden=32)
    return fused, layers, gate


def test_zero_gate_is_renorm(tiny_parts):
    tok, model, root = tiny_parts
    fused, layers, gate = _gated_copy(model, root)
    ids = torch.tensor([[3, 7, 9, 11, 4, 20], [5, 6, 7, 8, 9, 10]])
    mixes = [{"a": 0.7, "b": 0.3}, {"a": 0.2, "b": 0.5, "base": 0.3}]
    with torch.no_grad(), build_plan(layers, mixes).applied():
        ref = fused(ids).logits
    plan = build_plan(layers, mixes, methods=["token", "token"], learned=Learned(token=gate))
    with torch.no_grad(), plan.applied():
        ours = fused(ids).logits
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert set(plan.token.weights) == {0, 1}


def test_gate_without_the_router_prior_and_with_base_starts_uniform(tiny_parts):
    """At prior strength 0 a zero gate mixes the kept adapters evenly; with ``with_base`` the base model is a
    third option even when the router did not keep it (each adapter at 1/3)."""
    tok, model, root = tiny_parts
    fused, layers, _ = _gated_copy(model, root)
    ids = torch.tensor([[3, 7, 9, 11, 4, 20]])
    mix = [{"a": 0.9, "b": 0.1}]
    for with_base, share in ((False, 1 / 2), (True, 1 / 3)):
        gate = TokenGate(["a", "b", "base"], 2, 32, prior_strength=0.0, with_base=with_base)
        plan = build_plan(layers, mix, methods=["token"], learned=Learned(token=gate))
        with torch.no_grad(), plan.applied():
            ours = fused(ids).logits
        with torch.no_grad(), build_plan(layers, [{"a": share, "b": share}]).applied():
            ref = fused(ids).logits
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        assert plan.token.used == (["a", "b", "base"] if with_base else ["a", "b"])


def test_gate_changes_weights_per_token_and_mixed_batch_equals_separate_runs(tiny_parts):
    tok, model, root = tiny_parts
    fused, layers, gate = _gated_copy(model, root)
    torch.manual_seed(3)
    with torch.no_grad():
        gate.weight.normal_(0, 1.0)
    learned = Learned(token=gate)
    ids = torch.tensor([[3, 7, 9, 11, 4, 20], [5, 6, 7, 8, 9, 10], [3, 7, 9, 11, 4, 20]])
    mixes = [{"a": 0.5, "b": 0.5}, {"a": 0.7}, {}]
    methods = ["token", "renorm", "renorm"]
    plan = build_plan(layers, mixes, methods=methods, learned=learned)
    with torch.no_grad(), plan.applied():
        batch = fused(ids).logits
    w = plan.token.weights[0][0]  # (T, n_used): row 0's weights change along the sequence
    assert (w.max(0).values - w.min(0).values).max() > 1e-3
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[0]))
    for row, (mix, method) in enumerate(zip(mixes, methods)):
        with torch.no_grad(), build_plan(layers, [mix], methods=[method], learned=learned).applied():
            alone = fused(ids[row : row + 1]).logits
        torch.testing.assert_close(batch[row : row + 1], alone, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), build_plan(layers, [mixes[0]]).applied():
        static = fused(ids[:1]).logits
    assert not torch.allclose(batch[:1], static, atol=1e-4)  # a trained gate is not renorm


def test_save_and_load_round_trip(tmp_path):
    gate = TokenGate(["a", "base"], 2, 8, prior_strength=0.0, with_base=True)
    lw = LayerwiseWeights(["a", "base"], 2, init=0.5)
    with torch.no_grad():
        gate.weight.normal_()
    save(gate, tmp_path, {"method": "token"})
    save(lw, tmp_path, {"method": "layerwise"})
    back = load(tmp_path)
    assert back.available() == ["layerwise", "token"]
    torch.testing.assert_close(back.token.weight, gate.weight)
    assert (back.token.prior_strength, back.token.with_base) == (0.0, True)
    torch.testing.assert_close(back.layerwise.alpha, lw.alpha)
    assert load(tmp_path / "missing").available() == []


def test_training_lowers_the_loss_and_the_engine_serves_it(tiny_engine, tmp_path):
    from dlp.composite_answers import CompositeExample
    from dlp.fusion_training import train_fusion

    prompts = ["translate the food review", "what is two three apples", "the food review is good"]
    examples = [CompositeExample("x", p, "positive review of the food", {}) for p in prompts] * 4
    engine = tiny_engine
    mixture = {"alpha": 0.5, "beta": 0.5}
    real_route = engine.route

    class Route:
        selected = mixture

    engine.route = lambda prompt, *a, **k: Route()  # the tiny router's picks are random; fix two adapters
    try:
        for method in ("layerwise", "token"):
            learned, info = train_fusion(engine, method, examples, tmp_path, epochs=6, batch=4, lr=5e-2,
                                         progress=False)
            assert info["n_examples"] == len(examples) and info["final_loss"] < info["first_loss"]
    finally:
        engine.route = real_route
    old = engine.learned
    engine.learned = load(tmp_path)
    try:
        route = engine.route("translate the food review", top_p=1.0)
        last = None
        for last in engine.compare("translate the food review", top_p=1.0, fusion="token"):
            pass
        keys = [c.key for c in last.columns]
        assert keys[-2:] == ["fused", "fused:token"]
        names, steps = last.gate_trace(len(keys) - 1)
        assert set(names) == {n for n in route.selected}
        assert steps and all(abs(sum(s) - 1) < 1e-3 for s in steps)
    finally:
        engine.learned = old


def test_every_line_of_a_composed_answer_weighs_the_same():
    """The short half and the line break that hands over count as much as the long half."""
    from dlp.fusion_training import line_weights

    class Tok:
        def decode(self, ids):
            return {1: "negative", 2: "\n", 3: "La", 4: " soupe", 5: " froide", 6: "."}[ids[0]]

    w = line_weights(Tok(), [-100, -100, 1, 2, 3, 4, 5, 6])
    assert w[:2] == [0.0, 0.0]
    assert sum(w[2:4]) == pytest.approx(sum(w[4:])) and sum(w) == pytest.approx(6)
    assert line_weights(Tok(), [-100, 3, 4, 5]) == [0.0, 1.0, 1.0, 1.0], "one line: every token alike"
