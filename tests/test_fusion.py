"""The fused layer against a hand-computed reference and against PEFT itself."""

import copy
import threading

import pytest
import torch

import tiny
from dlp.cpu_kernels import ROWS, KernelTable, available_kernels, pack
from dlp.fusion import FusedLoRALinear, LoRAWeights, build_plan, fused_layers


def test_layer_matches_formula_per_row():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 12)
    layer = FusedLoRALinear(base, "x")
    pairs = {n: LoRAWeights(torch.randn(r, 16), torch.randn(12, r), s) for n, r, s in [("a", 4, 2.0), ("b", 2, 0.5)]}
    layer.loras.update(pairs)
    mixtures = [{}, {"a": 1.0}, {"a": 0.7, "b": 0.3}]
    x = torch.randn(3, 5, 16)  # (rows, T, in)
    with build_plan({"x": layer}, mixtures).applied():
        y = layer(x)
    for row, mix in enumerate(mixtures):
        ref = base(x[row])
        for n, w in mix.items():
            p = pairs[n]
            ref = ref + w * p.scale * (x[row] @ p.A.T @ p.B.T)  # W x + sum_i w_i scale_i B_i A_i x
        torch.testing.assert_close(y[row], ref, rtol=1e-5, atol=1e-5)


def test_no_plan_is_the_base_layer():
    base = torch.nn.Linear(8, 8)
    layer = FusedLoRALinear(base, "x")
    layer.loras["a"] = LoRAWeights(torch.randn(2, 8), torch.randn(8, 2), 1.0)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(layer(x), base(x))


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    return tiny.two_adapters(tmp_path_factory.mktemp("fusion"))


@pytest.mark.parametrize("kernel", available_kernels())
def test_matches_peft_cat_combination(tiny_parts, kernel):
    """Our weighted fusion equals PEFT's add_weighted_adapter(..., combination_type='cat'), which is exact, on
    every CPU kernel for the base projections (6 tokens: the row kernel takes them)."""
    from peft import PeftModel

    tok, model, root = tiny_parts
    fused, layers = tiny.fused_copy(model, root)
    if kernel == "onednn":
        pack(list(layers.values()))
    for layer in layers.values():
        layer.kernels = KernelTable({r: kernel for r in ROWS}, source="forced")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(root / "a"), adapter_name="a")
    peft_model.load_adapter(str(root / "b"), adapter_name="b")
    peft_model.add_weighted_adapter(["a", "b"], [0.7, 0.3], "mix", combination_type="cat")
    peft_model.set_adapter("mix")
    ids = torch.tensor([[3, 7, 9, 11, 4, 20]])
    with torch.no_grad(), build_plan(layers, [{"a": 0.7, "b": 0.3}]).applied():
        ours = fused(ids).logits
    with torch.no_grad():
        ref = peft_model(ids).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(ours, model(ids).logits, atol=1e-3)  # the adapters really do something


def test_mixed_batch_equals_separate_runs(tiny_parts):
    tok, model, root = tiny_parts
    fused, layers = tiny.fused_copy(model, root)
    ids = torch.tensor([[3, 7, 9, 11, 4, 20]])
    mixtures = [{}, {"a": 1.0}, {"b": 1.0}, {"a": 0.4, "b": 0.6}]
    with torch.no_grad(), build_plan(layers, mixtures).applied():
        batched = fused(ids.repeat(4, 1)).logits
    for row, mix in enumerate(mixtures):
        with torch.no_grad(), build_plan(layers, [mix]).applied():
            alone = fused(ids).logits
        torch.testing.assert_close(batched[row], alone[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(batched[0], model(ids).logits[0], rtol=1e-5, atol=1e-5)


def test_plans_do_not_leak_between_threads(tiny_parts):
    """Two threads with different mixtures at once each see only their own plan."""
    tok, model, root = tiny_parts
    fused, layers = tiny.fused_copy(model, root)
    ids = torch.tensor([[3, 7, 9, 11]])
    expected = {}
    for name in ("a", "b"):
        with torch.no_grad(), build_plan(layers, [{name: 1.0}]).applied():
            expected[name] = fused(ids).logits
    errors = []
    barrier = threading.Barrier(2)

    def work(name):
        plan = build_plan(layers, [{name: 1.0}])
        barrier.wait()
        for _ in range(20):
            with torch.no_grad(), plan.applied():
                out = fused(ids).logits
            if not torch.allclose(out, expected[name], atol=1e-5):
                errors.append(name)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert set(fused_layers(fused)) == set(layers)


def test_transposed_head_matches_linear():
    from dlp.lm_head import TransposedHead, speed_up_head

    tok = tiny.make_tokenizer()
    model = tiny.make_model(tok)
    ids = torch.tensor([[3, 7, 9, 11]])
    with torch.no_grad():
        ref = model(ids).logits
        speed_up_head(model)
        assert isinstance(model.get_output_embeddings(), TransposedHead)
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-5, atol=1e-5)


def test_concatenations_are_reused_and_never_stale():
    """A repeated adapter set reuses its concatenation; a replaced or removed adapter is never served stale."""
    from dlp.fusion import add_lora, remove_lora

    torch.manual_seed(3)
    layer = FusedLoRALinear(torch.nn.Linear(16, 12), "x")
    layers = {"x": layer}
    add_lora(layers, "a", {"x": LoRAWeights(torch.randn(4, 16), torch.randn(12, 4), 2.0)})
    add_lora(layers, "b", {"x": LoRAWeights(torch.randn(2, 16), torch.randn(12, 2), 0.5)})
    x = torch.randn(1, 3, 16)
    mix = [{"a": 0.7, "b": 0.3}]
    first = build_plan(layers, mix).layers["x"][0]
    assert build_plan(layers, mix).layers["x"][0] is first
    add_lora(layers, "b", {"x": LoRAWeights(torch.randn(2, 16), torch.randn(12, 2), 0.5)})  # replaced
    with torch.no_grad(), build_plan(layers, mix).applied():
        got = layer(x)
    ref = layer.base(x) + sum(w * layer.loras[n].scale * (x @ layer.loras[n].A.T @ layer.loras[n].B.T)
                              for n, w in mix[0].items())
    torch.testing.assert_close(got, ref)
    remove_lora(layers, "b")
    assert not layer._cats
