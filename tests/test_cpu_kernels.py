"""The measured CPU path: oneDNN's prepacked projections equal nn.Linear, and the choice is per row count."""

import json

import pytest
import torch

import tiny
from dlp import cpu_kernels
from dlp.cpu_kernels import KernelTable
from dlp.fusion import FusedLoRALinear, LoRAWeights, build_plan

pytestmark = pytest.mark.skipif(not cpu_kernels.supported(), reason="no oneDNN in this torch build")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_packed_projection_equals_linear(rows, bias):
    torch.manual_seed(rows)
    base = torch.nn.Linear(64, 96, bias=bias)
    layer = FusedLoRALinear(base, "x")
    layer.loras["a"] = LoRAWeights(torch.randn(4, 64), torch.randn(96, 4), 2.0)
    cpu_kernels.pack([layer])
    layer.kernels = KernelTable(list(cpu_kernels.ROWS), source="forced")
    x = torch.randn(rows, 1, 64)
    with torch.no_grad(), build_plan({"x": layer}, [{"a": 0.6}] * rows).applied():
        ours = layer(x)
        layer.kernels = None
        ref = layer(x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_choice_per_row_count_and_training_keeps_linear():
    table = KernelTable([5, 8])
    assert [table.use_packed(r) for r in (1, 3, 4, 5, 7, 8, 300)] == [False, False, False, True, True, True, True]
    base = torch.nn.Linear(8, 8)
    layer = FusedLoRALinear(base, "x")
    cpu_kernels.pack([layer])
    layer.kernels = KernelTable(list(cpu_kernels.ROWS))
    layer.packed = torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8), 1)  # a wrong weight shows the path
    x = torch.randn(2, 3, 8, requires_grad=True)
    layer(x).sum().backward()  # grad enabled: nn.Linear, differentiable
    assert x.grad is not None
    with torch.no_grad():
        assert torch.count_nonzero(layer(x) - (base.bias if base.bias is not None else 0)) == 0


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_the_heads_two_layouts_agree_and_are_chosen_per_row_count(rows):
    from dlp.lm_head import TransposedHead

    torch.manual_seed(rows)
    head = TransposedHead(torch.nn.Linear(64, 500, bias=False))
    h = torch.randn(rows, 1, 64)
    torch.testing.assert_close(head.run(h, True), head.run(h, False), rtol=1e-5, atol=1e-5)
    head.kernels = KernelTable([], head_linear_rows=[2, 3])
    assert [head.kernels.head_linear(r) for r in (1, 2, 3, 4, 5)] == [False, True, True, True, False]


def test_engine_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    from dlp.engine import Engine
    from dlp.manifest import load_manifest

    manifest = load_manifest(tiny.build(tmp_path / "stack"))
    monkeypatch.setenv("DLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DLP_CPU_KERNEL", "auto")
    first = Engine(manifest)
    assert first.kernels.source == "measured"
    assert set(first.kernels.ms) == {"stock", "onednn", "head_t", "head_linear"}  # the head's two layouts too
    assert len(json.loads((tmp_path / "cache" / "cpu_kernels.json").read_text())) == 1
    second = Engine(manifest)
    assert second.kernels.source == "cached" and second.kernels.packed_rows == first.kernels.packed_rows
    second.kernels = KernelTable(list(cpu_kernels.ROWS), source="forced", head_linear_rows=[3])
    texts = {}
    for on in (True, False):  # the same greedy text on either path, fused rows and a batch of three
        second.use_cpu_kernels(on)
        *_, last = second.compare("what is alpha two three beta", n_single=2)
        texts[on] = last.state.texts
    assert texts[True] == texts[False]
    monkeypatch.setenv("DLP_CPU_KERNEL", "stock")
    assert Engine(manifest).kernels is None
