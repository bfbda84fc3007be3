"""The CUDA path in bf16 (skipped without a GPU; ``scripts/gpu_check.sh`` runs it on one).

Same properties as the CPU tests, at bf16 tolerance: fusion equals PEFT's ``cat`` combination, a
mixed batch equals separate runs, same-seed rows agree, and concurrent requests get their serial
results.
"""

import copy
import threading

import pytest
import torch

import tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
BF16 = dict(rtol=3e-2, atol=3e-2)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny.two_adapters(tmp_path_factory.mktemp("gpu"))


def test_bf16_fusion_matches_peft_cat(parts):
    from peft import PeftModel

    from dlp.fusion import build_plan

    tok, model, root = parts
    fused, layers = tiny.fused_copy(model, root, device="cuda", dtype=torch.bfloat16)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(root / "a"), adapter_name="a")
    peft_model.load_adapter(str(root / "b"), adapter_name="b")
    peft_model.add_weighted_adapter(["a", "b"], [0.7, 0.3], "mix", combination_type="cat")
    peft_model.set_adapter("mix")
    peft_model.to("cuda", torch.bfloat16)
    ids = torch.tensor([[3, 7, 9, 11, 4, 20]], device="cuda")
    with torch.no_grad(), build_plan(layers, [{"a": 0.7, "b": 0.3}], torch.device("cuda")).applied():
        ours = fused(ids).logits.float()
    with torch.no_grad():
        ref = peft_model(ids).logits.float()
        base = model.to("cuda", torch.bfloat16)(ids).logits.float()
        model.to("cpu", torch.float32)
    torch.testing.assert_close(ours, ref, **BF16)
    assert (ours - base).abs().max() > 0.1  # the adapters really do something


def test_bf16_mixed_batch_equals_separate_runs(parts):
    from dlp.fusion import build_plan

    tok, model, root = parts
    fused, layers = tiny.fused_copy(model, root, device="cuda", dtype=torch.bfloat16)
    ids = torch.tensor([[3, 7, 9, 11, 4, 20]], device="cuda")
    mixtures = [{}, {"a": 1.0}, {"b": 1.0}, {"a": 0.4, "b": 0.6}]
    with torch.no_grad(), build_plan(layers, mixtures, torch.device("cuda")).applied():
        batched = fused(ids.repeat(4, 1)).logits.float()
    for row, mix in enumerate(mixtures):
        with torch.no_grad(), build_plan(layers, [mix], torch.device("cuda")).applied():
            alone = fused(ids).logits.float()
        torch.testing.assert_close(batched[row], alone[0], **BF16)


@pytest.fixture(scope="module")
def cuda_engine(tmp_path_factory):
    from dlp.base_model import load_base
    from dlp.engine import Engine
    from dlp.manifest import load_manifest

    manifest = load_manifest(tiny.build(tmp_path_factory.mktemp("gpu-engine")))
    return Engine(manifest, load_base(manifest.base_sources, torch.device("cuda"), torch.bfloat16))


def _texts(engine, prompt, mixtures, options):
    from dlp.engine import Column

    last = None
    for last in engine.stream(prompt, [Column(f"c{i}", "", m) for i, m in enumerate(mixtures)], options,
                              every=10_000):
        pass
    return last.state.texts


def test_same_seed_rows_agree_on_cuda(cuda_engine):
    from dlp.generation import GenerationOptions

    opts = GenerationOptions(max_new_tokens=12, temperature=1.0, seed=5)
    mix = {tiny.NAMES[0]: 1.0}
    a, b, c = _texts(cuda_engine, "write a python function", [mix, {}, mix], opts)
    assert a == c
    assert _texts(cuda_engine, "write a python function", [mix], opts)[0] == a


def test_concurrent_requests_get_their_serial_results_on_cuda(cuda_engine):
    from dlp.generation import GenerationOptions

    opts = GenerationOptions(max_new_tokens=10)
    jobs = [(f"what is {w} two three", {tiny.NAMES[i % 3]: 1.0} if i % 4 else {})
            for i, w in enumerate(["cat", "dog", "sun", "code", "food", "movie", "paper", "list"])]
    serial = [_texts(cuda_engine, p, [m], opts)[0] for p, m in jobs]
    results = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(i):
        barrier.wait()
        results[i] = _texts(cuda_engine, jobs[i][0], [jobs[i][1]], opts)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == serial
