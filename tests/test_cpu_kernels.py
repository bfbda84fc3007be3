"""The measured CPU path: every kernel equals nn.Linear, and the choice is per row count."""

import json

import pytest
import torch

import tiny
from dlp import cpu_kernels, row_gemm
from dlp.cpu_kernels import ROWS, KernelTable
from dlp.fusion import FusedLoRALinear, LoRAWeights, build_plan, fused_layers

KINDS = cpu_kernels.available_kernels()
needs_rows = pytest.mark.skipif("rows" not in KINDS, reason=f"no row kernel here: {row_gemm.why_not()}")


def _layer(bias: bool, seed: int) -> FusedLoRALinear:
    torch.manual_seed(seed)
    layer = FusedLoRALinear(torch.nn.Linear(64, 96, bias=bias), "x")
    layer.loras["a"] = LoRAWeights(torch.randn(4, 64), torch.randn(96, 4), 2.0)
    return layer


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "stock"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_each_kernel_equals_linear_in_a_fused_layer(kind, rows, bias):
    layer = _layer(bias, rows)
    if kind == "onednn":
        cpu_kernels.pack([layer])
    layer.kernels = KernelTable({r: kind for r in ROWS}, source="forced")
    x = torch.randn(rows, 1, 64)
    with torch.no_grad(), build_plan({"x": layer}, [{"a": 0.6}] * rows).applied():
        ours = layer(x)
        layer.kernels = None
        ref = layer(x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@needs_rows
@pytest.mark.parametrize("shape", [(1, 1, 576), (5, 1, 576), (8, 1, 1536), (2, 3, 37), (1, 1, 3)])
def test_row_kernel_handles_odd_sizes_and_tails(shape):
    torch.manual_seed(len(shape))
    x, w, b = torch.randn(shape), torch.randn(131, shape[-1]), torch.randn(131)
    torch.testing.assert_close(row_gemm.linear(x, w, b), torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(row_gemm.linear(x, w), torch.nn.functional.linear(x, w), rtol=1e-5, atol=1e-4)


@needs_rows
@pytest.mark.parametrize("rows, tokens", [(1, 1), (3, 1), (2, 3), (8, 1)])
def test_base_and_lora_in_one_row_kernel_call(rows, tokens):
    """Mixed rows, two adapters of different ranks: the row kernel's LoRA pass equals the torch path."""
    torch.manual_seed(10 * rows + tokens)
    layer = FusedLoRALinear(torch.nn.Linear(64, 97), "x")
    layer.loras["a"] = LoRAWeights(torch.randn(4, 64), torch.randn(97, 4), 2.0)
    layer.loras["b"] = LoRAWeights(torch.randn(3, 64), torch.randn(97, 3), 0.5)
    mixes = [{"a": 0.7, "b": 0.3}, {}, {"b": 1.0}, {"a": 1.0}] * 2
    x = torch.randn(rows, tokens, 64)
    with torch.no_grad(), build_plan({"x": layer}, mixes[:rows]).applied():
        layer.kernels = KernelTable({r: "rows" for r in ROWS}, source="forced")
        ours = layer(x)
        layer.kernels = None
        ref = layer(x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="rank"):
        row_gemm.linear_lora(x, layer.base.weight, None, torch.randn(300, 64), torch.randn(97, 300),
                             torch.ones(rows * tokens, 300))


def test_choice_per_row_count_prefill_and_training_keep_linear():
    table = KernelTable({1: "stock", 2: "stock", 3: "rows", 5: "onednn", 8: "rows"})
    assert [table.proj_kernel(r) for r in (1, 3, 4, 5, 7, 8, 9, 300)] == \
        ["stock", "rows", "rows", "onednn", "onednn", "rows", "stock", "stock"]  # the row kernel stops at 8 rows
    layer = _layer(True, 0)
    layer.kernels = KernelTable({r: "rows" for r in ROWS})
    x = torch.randn(2, 3, 64, requires_grad=True)
    layer(x).sum().backward()  # grad enabled: nn.Linear, differentiable
    assert x.grad is not None


def test_table_round_trips_and_old_formats_are_not_read():
    table = KernelTable({1: "rows", 8: "stock"}, {"rows": {"1": 1.0}}, head={1: "head_rows"})
    back = KernelTable.from_dict(json.loads(json.dumps(table.as_dict())), "cached")
    assert (back.proj, back.head, back.ms, back.source) == (table.proj, table.head, table.ms, "cached")
    assert json.loads(cpu_kernels._key([_layer(False, 0)], None))[0] == 2


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_the_heads_kernels_agree_and_are_chosen_per_row_count(rows):
    from dlp.lm_head import TransposedHead

    torch.manual_seed(rows)
    head = TransposedHead(torch.nn.Linear(64, 500, bias=False))
    h = torch.randn(rows, 1, 64)
    assert head.weight_t is None  # built on first use, so a start-up whose kernels skip it never pays for it
    for kind in ["head_linear"] + (["head_rows"] if "rows" in KINDS else []):
        torch.testing.assert_close(head.run(h, kind), head.run(h, "head_t"), rtol=1e-5, atol=1e-5)
    head.kernels = KernelTable({}, head={1: "head_t", 2: "head_linear", 3: "head_linear", 5: "head_t", 8: "head_rows"})
    assert [head.kernels.head_kernel(r) for r in (1, 2, 3, 4, 5, 8, 40)] == \
        ["head_t", "head_linear", "head_linear", "head_linear", "head_t", "head_rows", "head_t"]
    ref = head(h)
    head.drop_transposed()  # no row count uses the copy: F.linear takes its place, same logits
    torch.testing.assert_close(head.run(h, "head_t"), ref, rtol=1e-5, atol=1e-5)
    assert head.weight_t is None  # and a dropped copy is never built again


def test_engine_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    from dlp.engine import Engine
    from dlp.manifest import load_manifest

    manifest = load_manifest(tiny.build(tmp_path / "stack"))
    monkeypatch.setenv("DLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DLP_CPU_KERNEL", "auto")
    first = Engine(manifest)
    if len(KINDS) == 1:
        assert first.kernels is None
        return
    assert first.kernels.source == "measured"
    assert set(first.kernels.ms) >= {*KINDS, "head_t", "head_linear"}  # the head's kernels too
    assert len(json.loads((tmp_path / "cache" / "cpu_kernels.json").read_text())) == 1
    second = Engine(manifest)
    assert second.kernels.source == "cached" and second.kernels.proj == first.kernels.proj
    texts = {}
    for kind in [None, *KINDS]:  # the same greedy text on every path, fused rows and a batch of three
        if kind is not None:
            heads = {"rows": "head_rows", "onednn": "head_linear"}.get(kind, "head_t")
            second.kernels = KernelTable({r: kind for r in ROWS}, source="forced", head={r: heads for r in ROWS})
            if kind == "onednn":
                cpu_kernels.pack(list(fused_layers(second.model).values()))
        second.use_cpu_kernels(kind is not None)
        *_, last = second.compare("what is alpha two three beta", n_single=2)
        texts[kind] = last.state.texts
    assert all(t == texts[None] for t in texts.values()), texts
    monkeypatch.setenv("DLP_CPU_KERNEL", "stock")
    assert Engine(manifest).kernels is None


def test_without_a_compiler_the_row_kernel_steps_aside_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(row_gemm, "_LIB", None)
    monkeypatch.setattr(row_gemm, "_WHY_NOT", None)
    monkeypatch.setattr(row_gemm.shutil, "which", lambda name: None)
    assert row_gemm.load(tmp_path) is None
    assert "no C compiler" in row_gemm.why_not()
    assert "rows" not in cpu_kernels.available_kernels()


def test_a_cached_table_naming_a_missing_kernel_is_measured_again():
    table = KernelTable({r: "stock" for r in ROWS}, head={r: "head_rows" for r in ROWS})
    assert not cpu_kernels._runs_here(table, ["stock", "onednn"])
    assert cpu_kernels._runs_here(table, ["stock", "rows"])
    assert not cpu_kernels._runs_here(KernelTable({1: "rows"}), ["stock"])


@needs_rows
def test_the_avx2_build_is_right_too(tmp_path):
    """The AMD EPYC machines have AVX2 only: build the kernel for that vector unit and check it here."""
    import ctypes
    import subprocess

    if " avx2 " not in open("/proc/cpuinfo").read():
        pytest.skip("this CPU cannot run AVX2 code")
    src = tmp_path / "k.c"
    src.write_text(row_gemm.source())
    flags = ["-march=haswell" if f == "-march=native" else f for f in row_gemm.FLAGS]
    subprocess.run(["cc", *flags, str(src), "-o", str(tmp_path / "k.so")], check=True)
    lib = row_gemm.bind(ctypes.CDLL(str(tmp_path / "k.so")))
    for rows in (1, 3, 5, 8):
        for k in (576, 37, 3):
            x, w, b = torch.randn(rows, k), torch.randn(131, k), torch.randn(131)
            out = torch.empty(rows, 131)
            assert lib.row_gemm(x.data_ptr(), rows, k, w.data_ptr(), 131, b.data_ptr(), out.data_ptr()) == 0
            torch.testing.assert_close(out, torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-4)
