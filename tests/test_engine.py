"""The engine on a tiny random Llama: routing, side-by-side generation, batching, errors."""

import json
import shutil

import pytest

import tiny
from dlp import compute
from dlp.engine import Column, Engine
from dlp.errors import DLPError
from dlp.generation import GenerationOptions
from dlp.manifest import load_manifest

PROMPT = "what is the sum of two and three apples"


def test_route_probabilities_and_selection(tiny_engine):
    r = tiny_engine.route(PROMPT, top_p=0.6)
    assert set(r.probs) == {"base", *tiny.NAMES}  # "base" (no adapter) is a routing choice too
    assert sum(r.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(r.selected.values()) == pytest.approx(1.0)
    kept = sorted(r.probs, key=lambda n: -r.probs[n])[: len(r.selected)]
    assert list(r.selected) == kept
    assert sum(r.probs[n] for n in kept) >= 0.6 - 1e-6
    assert r.router_ms >= 0


def test_compare_columns_and_timings(tiny_engine):
    updates = list(tiny_engine.compare(PROMPT, top_p=0.9, n_single=2, options=GenerationOptions(max_new_tokens=6)))
    last = updates[-1].as_dict()
    assert len(updates) > 2, "columns should stream"
    assert [c["key"] for c in last["columns"]][0] == "base"
    assert [c["key"] for c in last["columns"]][-1] == "fused"
    kept = [n for n in updates[-1].route.selected if n != "base"]
    assert [c["key"] for c in last["columns"]][1:-1] == [f"single:{n}" for n in kept[:2]], "singles: the kept set"
    for col in last["columns"]:
        t = col["timing"]
        assert 0 < t["tokens"] <= 6 and t["total_ms"] > 0 and t["ttft_ms"] > 0
        assert {"router_ms", "setup_ms", "prefill_ms", "tokens_per_s"} <= set(t)
    assert last["columns"][0]["timing"]["router_ms"] == 0.0


def _alone(engine, prompt, mixture, n=8):
    return engine.generate(prompt, "base", GenerationOptions(max_new_tokens=n)) if not mixture else \
        list(engine.stream(prompt, [Column("x", "x", mixture)], GenerationOptions(max_new_tokens=n)))[-1]


def test_batched_rows_equal_separate_runs(tiny_engine):
    mixtures = [{}, {"alpha": 1.0}, {"gamma": 1.0}, {"alpha": 0.5, "beta": 0.25, "gamma": 0.25}]
    columns = [Column(str(i), str(i), m) for i, m in enumerate(mixtures)]
    batched = list(tiny_engine.stream(PROMPT, columns, GenerationOptions(max_new_tokens=8)))[-1]
    for i, m in enumerate(mixtures):
        alone = _alone(tiny_engine, PROMPT, m)
        assert batched.state.token_ids[i] == alone.state.token_ids[0], f"row {i} {m}"
    assert len({tuple(t) for t in batched.state.token_ids}) > 1, "adapters should change the output"


def test_different_prompts_in_one_batch(tiny_engine):
    prompts = ["what is two", "translate the food review please it was good"]
    cols = [Column("a", "a", {"alpha": 1.0}), Column("b", "b", {"beta": 1.0})]
    batched = list(tiny_engine.stream(prompts, cols, GenerationOptions(max_new_tokens=6)))[-1]
    for i, (p, c) in enumerate(zip(prompts, cols)):
        assert batched.state.token_ids[i] == _alone(tiny_engine, p, c.mixture, 6).state.token_ids[0]


def test_seeded_sampling_is_reproducible(tiny_engine):
    opts = GenerationOptions(max_new_tokens=8, temperature=1.0, seed=5)
    a = tiny_engine.generate(PROMPT, "adapter:alpha", opts).state.token_ids
    b = tiny_engine.generate(PROMPT, "adapter:alpha", opts).state.token_ids
    c = tiny_engine.generate(PROMPT, "adapter:alpha", GenerationOptions(max_new_tokens=8, temperature=1.0, seed=6)).state.token_ids
    assert a == b and a != c


@pytest.mark.parametrize("call, match", [
    (lambda e: e.route("   "), "empty"),
    (lambda e: e.route("hi", top_p=0), "top-p"),
    (lambda e: e.route("hi", top_p=1.5), "top-p"),
    (lambda e: e.route("hi", top_k=-2), "top-k"),
    (lambda e: e.generate("hi", "adapter:nope"), "Unknown adapter 'nope'. Available: alpha, beta, gamma"),
    (lambda e: e.generate("hi", "sideways"), "Unknown mode"),
    (lambda e: e.generate("hi", "base", GenerationOptions(max_new_tokens=0)), "max new tokens"),
    (lambda e: e.generate("hi", "base", GenerationOptions(max_new_tokens=5000)), "max new tokens"),
    (lambda e: e.generate("hi", "base", GenerationOptions(temperature=-1)), "temperature"),
    (lambda e: e.generate("two " * 200, "base"), "limit is 64"),
    (lambda e: list(e.compare("hi", n_single=9)), "single-adapter columns"),
])
def test_bad_input_is_refused_and_engine_stays_usable(tiny_engine, call, match):
    with pytest.raises(DLPError, match=match):
        call(tiny_engine)
    assert tiny_engine.generate("what is two", "fused", GenerationOptions(max_new_tokens=2)).state.finished


def test_add_and_remove_adapters_one_at_a_time(tiny_manifest, tmp_path):
    engine = Engine(load_manifest(tiny_manifest))
    before = _alone(engine, PROMPT, {"alpha": 1.0}).state.token_ids
    engine.remove_adapter("beta")
    assert engine.names == ["alpha", "gamma"]
    assert set(engine.route(PROMPT, top_p=1.0).probs) == {"base", "alpha", "gamma"}
    with pytest.raises(DLPError, match="Unknown adapter 'beta'"):
        engine.generate(PROMPT, "adapter:beta")
    engine.add_adapter("beta", tiny_manifest.parent / "adapters" / "beta")
    assert engine.names == ["alpha", "gamma", "beta"]
    assert _alone(engine, PROMPT, {"alpha": 1.0}).state.token_ids == before
    with pytest.raises(DLPError, match="already loaded"):
        engine.add_adapter("beta", tiny_manifest.parent / "adapters" / "beta")


def _manifest_with_adapter(tiny_manifest, tmp_path, folder):
    data = json.loads(tiny_manifest.read_text())
    data["base"]["sources"][0]["value"] = str(tiny_manifest.parent / "base")
    data["router"]["path"] = str(tiny_manifest.parent / "router")
    data["adapters"] = [{"name": "broken", "path": str(folder)}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    return load_manifest(path)


def test_adapter_for_another_base_is_refused(tiny_manifest, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny.make_tokenizer()
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=40,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
    tiny.make_adapter(other, tmp_path / "wide", seed=3)
    with pytest.raises(DLPError, match="trained for another base model"):
        Engine(_manifest_with_adapter(tiny_manifest, tmp_path, tmp_path / "wide"))


def test_adapter_with_unknown_module_is_refused(tiny_manifest, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "renamed"
    shutil.copytree(tiny_manifest.parent / "adapters" / "alpha", folder)
    state = load_file(folder / "adapter_model.safetensors")
    save_file({k.replace("q_proj", "qkv_proj"): v for k, v in state.items()}, folder / "adapter_model.safetensors")
    with pytest.raises(DLPError, match="does not have"):
        Engine(_manifest_with_adapter(tiny_manifest, tmp_path, folder))


def test_adapter_holding_nan_is_refused_naming_the_module(tiny_manifest, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan"
    shutil.copytree(tiny_manifest.parent / "adapters" / "alpha", folder)
    state = load_file(folder / "adapter_model.safetensors")
    key = sorted(k for k in state if "lora_B" in k)[-1]
    state[key][0, 0] = float("nan")
    save_file(state, folder / "adapter_model.safetensors")
    module = key.split(".lora_B")[0].removeprefix("base_model.model.")
    with pytest.raises(DLPError, match=f"'{module}' holds NaN or infinite values"):
        Engine(_manifest_with_adapter(tiny_manifest, tmp_path, folder))


@pytest.mark.parametrize("damage, match", [
    (lambda f: (f / "adapter_model.safetensors").unlink(), "missing"),
    (lambda f: (f / "adapter_model.safetensors").write_bytes(b"not a safetensors file"), "corrupt"),
    (lambda f: (f / "adapter_config.json").unlink(), "no adapter_config.json"),
])
def test_missing_or_corrupt_adapter_files(tiny_manifest, tmp_path, damage, match):
    folder = tmp_path / "ad"
    shutil.copytree(tiny_manifest.parent / "adapters" / "alpha", folder)
    damage(folder)
    with pytest.raises(DLPError, match=match):
        Engine(_manifest_with_adapter(tiny_manifest, tmp_path, folder))


def test_base_pseudo_adapter_scales_the_delta_down(tiny_engine):
    """``base`` is a zero LoRA: kept alone the answer is the base model's; kept beside an adapter, the
    mixture {base: 0.5, alpha: 0.5} is alpha at half strength."""
    opts = GenerationOptions(max_new_tokens=8)
    cols = [Column("base", "", {}), Column("b", "", {"base": 1.0}), Column("half", "", {"base": 0.5, "alpha": 0.5}),
            Column("alpha-half", "", {"alpha": 0.5}), Column("alpha", "", {"alpha": 1.0})]
    last = list(tiny_engine.stream(PROMPT, cols, opts))[-1].state.texts
    assert last[1] == last[0]
    assert last[2] == last[3]
    with pytest.raises(DLPError, match="reserved"):
        tiny_engine.add_adapter("base", tiny_engine.adapters["alpha"].folder)
    r = tiny_engine.route(PROMPT, top_p=1.0)
    assert "base" in r.probs and "base" not in [c.mixture and next(iter(c.mixture)) for c in tiny_engine.columns_for(r, 3)[1:-1]]


def test_manifest_strength_calibrates_an_adapter(tiny_engine, tiny_manifest, tmp_path):
    """``"strength": 0.5`` in the manifest makes weight 1 apply half the delta: the same answer as the mixture
    {alpha: 0.5, base: 0.5} at full strength, in the single column and in fusion alike."""
    data = json.loads(tiny_manifest.read_text())
    data["adapters"][0]["strength"] = 0.5
    for a in data["adapters"]:
        a["path"] = str((tiny_manifest.parent / a["path"]).resolve())
    data["base"]["sources"][0]["value"] = str(tiny_manifest.parent / "base")
    data["router"]["path"] = str(tiny_manifest.parent / "router")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    calibrated = Engine(load_manifest(path))
    assert calibrated.adapters["alpha"].strength == 0.5
    opts = GenerationOptions(max_new_tokens=8)
    mine = list(calibrated.stream(PROMPT, [Column("a", "", {"alpha": 1.0}), Column("f", "", {"alpha": 0.5, "beta": 0.5})],
                                  opts))[-1].state.texts
    ref = list(tiny_engine.stream(PROMPT, [Column("a", "", {"alpha": 0.5, "base": 0.5}),
                                           Column("f", "", {"alpha": 0.25, "beta": 0.5, "base": 0.25})], opts))[-1].state.texts
    assert mine == ref
    data["adapters"][0]["strength"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(DLPError, match="strength"):
        load_manifest(path)


def test_cancel_stops_generation_within_a_token(tiny_engine):
    import threading

    cancel = threading.Event()
    opts = GenerationOptions(max_new_tokens=200, min_new_tokens=200)
    seen = 0
    for update in tiny_engine.stream(PROMPT, [Column("base", "", {})], opts, cancel=cancel):
        seen += 1
        if seen == 3:
            cancel.set()
    assert update.state.finished and update.state.cancelled
    assert update.state.timings[0].tokens < 10  # stopped, not decoded to 200
    assert update.state.cut_short(0)  # the page marks it "(stopped)"


def test_a_row_that_ended_is_not_marked_stopped(tiny_engine):
    """Stop cuts the rows still writing; one that had already ended keeps its own (complete) answer."""
    for update in tiny_engine.stream(PROMPT, [Column("base", "", {})], GenerationOptions(max_new_tokens=3)):
        state = update.state
    assert state.finished and not state.cancelled and not state.cut_short(0)
    state.cancelled, state.eos = True, [True]  # ended on EOS before Stop landed
    assert not state.cut_short(0)
    state.eos = [False]
    assert state.cut_short(0)


def test_closing_the_stream_stops_the_worker(tiny_engine):
    import threading
    import time

    opts = GenerationOptions(max_new_tokens=1024, min_new_tokens=1024)  # several seconds if not stopped
    stream = tiny_engine.stream(PROMPT, [Column("base", "", {})], opts)
    next(stream)
    stream.close()  # what happens when a visitor closes the tab or the UI cancels the event
    start = time.perf_counter()
    compute.run(threading.get_ident)  # queued behind the run: the compute thread is free again at once
    assert time.perf_counter() - start < 0.5


def test_same_seed_rows_sample_alike(tiny_engine):
    """With temperature > 0, rows with the same mixture give the same text: every row has its own
    generator, seeded alike, so column differences come from the adapters."""
    opts = GenerationOptions(max_new_tokens=12, temperature=1.0, seed=3)
    cols = [Column("a", "", {"alpha": 1.0}), Column("b", "", {}), Column("c", "", {"alpha": 1.0})]
    texts = list(tiny_engine.stream(PROMPT, cols, opts))[-1].state.texts
    assert texts[0] == texts[2]
    alone = list(tiny_engine.stream(PROMPT, cols[:1], opts))[-1].state.texts[0]
    assert alone == texts[0]


def test_huge_prompt_is_refused_before_tokenizing(tiny_engine, monkeypatch):
    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized a prompt that is over the character cap")

    monkeypatch.setattr(tiny_engine.routing.router, "ids", no_tokenizing)
    with pytest.raises(DLPError, match="characters"):
        tiny_engine.route("word " * 200_000)


def test_loop_guard_ends_only_the_row_that_repeats_itself():
    import torch

    from dlp.generation import LoopGuard, repeats_at_end

    assert repeats_at_end([7, 8] + [1, 2, 3, 4, 5] * 3)  # a 5-token phrase three times in a row
    assert not repeats_at_end([1, 2, 3, 4, 5] * 2), "twice is not yet a loop"
    assert not repeats_at_end([0] * 30) and not repeats_at_end([1, 2] * 12), "short runs of a short unit are not"
    assert repeats_at_end([9] + [5] * 32) and repeats_at_end([1, 2] * 16), "but 32 tokens of one are"
    assert not repeats_at_end([1, 2, 3, 4, 9, 1, 2, 3, 4, 8, 1, 2, 3, 4])
    guard = LoopGuard(prompt_len=2)
    ids = torch.tensor([[5, 5, *[1, 2, 3, 4] * 3], [5, 5, *range(20, 32)]])
    assert guard(ids, None).tolist() == [True, False] and guard.ended == {0}
    # A row that ended (end-of-text, then padding while longer rows decode) is finished, never "repeating".
    guard = LoopGuard(prompt_len=2, stop_ids={0})
    ids = torch.tensor([[5, 5, 7, 8, 9, *[0] * 40], [5, 5, *range(20, 63)]])
    assert guard(ids, None).tolist() == [False, False] and guard.ended == set()


def test_single_columns_are_the_kept_set_or_the_ones_asked_for(tiny_engine):
    from dlp.engine import RouteResult

    base_only = RouteResult("hello", {"base": 0.8, "alpha": 0.15, "beta": 0.05}, {"base": 1.0}, 1.0, 0.5, 0, "renorm")
    keys = [c.key for c in tiny_engine.columns_for(base_only, 2)]
    assert keys == ["base", "fused"], "routed to base alone: no runner-up column"
    asked = tiny_engine.columns_for(base_only, 2, singles=["alpha"])
    assert [c.key for c in asked] == ["base", "single:alpha", "fused"] and "not kept" in asked[1].label
    with pytest.raises(DLPError, match="gamma"):
        tiny_engine.columns_for(base_only, 2, singles=["gamma"])


def test_columns_that_compute_the_same_share_one_row(tiny_engine):
    """A one-skill prompt's single, fused and learned columns are one mixture: one batch row, the same text."""
    cols = [Column("base", "", {}), Column("single:alpha", "", {"alpha": 1.0}),
            Column("fused", "", {"alpha": 1.0}), Column("fused:token", "", {"alpha": 1.0})]
    *_, last = tiny_engine.stream(PROMPT, cols, GenerationOptions(max_new_tokens=8))
    assert last.rows == [0, 1, 1, 1]
    assert last.state.texts[1] == last.state.texts[2] == last.state.texts[3] != ""
    assert [t.tokens for t in last.state.timings][1:] == [last.state.timings[1].tokens] * 3
    *_, alone = tiny_engine.stream(PROMPT, [cols[2]], GenerationOptions(max_new_tokens=8))
    assert alone.state.texts[0] == last.state.texts[2]


def test_a_character_cut_at_the_cap_is_not_shown_as_a_replacement_mark():
    import queue

    from dlp.generation import RowStreamer

    class Bytes:  # a byte-level tokenizer's decode: an emoji's first two bytes alone give U+FFFD
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    streamer = RowStreamer(Bytes(), 2, set(), queue.Queue())
    smile = list("ok 🙂".encode())
    streamer.ids = [smile[:-2], smile]
    assert streamer.snapshot(True).texts == ["ok ", "ok 🙂"]
