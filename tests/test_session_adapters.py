"""Visitors' own adapters: private to a session, routed by the session's router, gone when it ends."""

import json
import shutil
import zipfile

import pytest
import torch

import tiny
from dlp.engine import Column, Engine
from dlp.errors import DLPError
from dlp.fusion import fused_layers
from dlp.generation import GenerationOptions
from dlp.manifest import load_manifest
from dlp.session_adapters import MAX_PER_SESSION
from dlp.uploads import adapter_folder

NEW = ["please write python code for the list", "python function code for a list please",
       "write code in python that sums a list", "python code to write a function", "a python function for this list",
       "code a python list function"]
OLD = ["what is alpha two three", "translate the food review", "how many apples", "what is gamma two three"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("visitors")
    engine = Engine(load_manifest(tiny.build(root)))
    tok = tiny.make_tokenizer()
    tiny.make_adapter(tiny.make_model(tok), root / "mine", seed=42, targets=("q_proj", "v_proj", "gate_proj"), r=4)
    return engine, root


def _visitor_keys(engine) -> set[str]:
    return {k for layer in fused_layers(engine.model).values() for k in layer.loras if k.startswith("~")}


def _probs(engine, session, prompt):
    return engine.route(prompt, 1.0, 0, "renorm", engine.scope(session)).probs


def test_a_visitor_adapter_is_private_and_routed(world):
    engine, root = world
    before = {p: _probs(engine, None, p) for p in OLD}
    engine.visitors.add("A", "mine", root / "mine", NEW)
    try:
        a = engine.scope("A")
        assert a.names[-1] == "mine" and a.mine == ("mine",)
        shared = engine.routing.router.embed.weight
        assert a.routing.router.embed.weight.data_ptr() == shared.data_ptr(), "the embedding is shared, not copied"
        probs = _probs(engine, "A", "write python code for a list")
        assert max(probs, key=probs.get) == "mine"
        for session in (None, "B"):  # everyone else: same names, same probabilities, to the bit
            assert "mine" not in engine.scope(session).names
            for p, old in before.items():
                assert _probs(engine, session, p) == old
        with pytest.raises(DLPError, match="Unknown adapter 'mine'"):
            engine.check_mixture({"mine": 1.0}, engine.scope("B"))
        cols = [Column("base", "base", {}), Column("single:mine", "mine", {"mine": 1.0})]
        opts = GenerationOptions(max_new_tokens=6, temperature=0.0)
        texts = list(engine.stream("the cat is good", cols, opts, scope=a))[-1].state.texts
        assert texts[0] != texts[1], "the visitor's LoRA changes the answer"
        assert engine.names == ["alpha", "beta", "gamma"]  # the shared table is untouched
    finally:
        engine.visitors.drop("A")
    assert engine.visitors.count == 0 and not _visitor_keys(engine)
    assert engine.scope("A").routing is engine.routing


def test_remove_one_of_two_keeps_the_other(world):
    engine, root = world
    shutil.copytree(root / "mine", root / "second", dirs_exist_ok=True)
    engine.visitors.add("C", "mine", root / "mine", NEW)
    engine.visitors.add("C", "second", root / "second", ["the dog is bad", "a bad dog", "dog bad", "bad dog is",
                                                          "is the dog bad"])
    engine.visitors.remove("C", "mine")
    assert engine.scope("C").names[-1] == "second" and "mine" not in engine.scope("C").names
    assert engine.visitors.drop("C") == 1
    assert engine.visitors.count == 0 and not _visitor_keys(engine)


def test_limits_per_session(world):
    engine, root = world
    try:
        for i in range(MAX_PER_SESSION):
            engine.visitors.add("D", f"m{i}", root / "mine", NEW)
        with pytest.raises(DLPError, match="limit"):
            engine.visitors.add("D", "one_more", root / "mine", NEW)
        with pytest.raises(DLPError, match="already loaded"):
            engine.visitors.add("E", "alpha", root / "mine", NEW)
    finally:
        engine.visitors.drop("D")
    assert engine.visitors.count == 0


@pytest.mark.parametrize("case, match", [
    ("few", "at least 5"), ("reserved", "reserved"), ("rank", "rank 80"), ("other_base", "another base model"),
    ("corrupt", "cannot read"),
])
def test_bad_visitor_adapters_leave_nothing(world, tmp_path, case, match):
    engine, root = world
    folder, name, examples = tmp_path / "x", "x", NEW
    shutil.copytree(root / "mine", folder)
    if case == "few":
        examples = NEW[:3]
    elif case == "reserved":
        name = "base"
    elif case == "rank":
        shutil.rmtree(folder)
        tiny.make_adapter(tiny.make_model(tiny.make_tokenizer()), folder, seed=3, targets=("q_proj",), r=80)
    elif case == "other_base":
        shutil.rmtree(folder)
        tiny.make_foreign_adapter(folder)
    elif case == "corrupt":
        (folder / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DLPError, match=match):
        engine.visitors.add("F", name, folder, examples)
    assert engine.visitors.count == 0 and not _visitor_keys(engine) and engine.scope("F").mine == ()


def test_uploads_become_a_folder_and_pickles_are_refused(world, tmp_path):
    _, root = world
    src = root / "mine"
    loose = adapter_folder([src / "adapter_config.json", src / "adapter_model.safetensors"], 2**20)
    assert sorted(p.name for p in loose.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    shutil.rmtree(loose)
    bundle = tmp_path / "a.zip"
    with zipfile.ZipFile(bundle, "w") as z:  # a crafted path must not escape the folder
        z.write(src / "adapter_config.json", "../../outside/adapter_config.json")
        z.write(src / "adapter_model.safetensors", "nested/adapter_model.safetensors")
    zipped = adapter_folder([bundle], 2**20)
    assert json.loads((zipped / "adapter_config.json").read_text())["r"] == 4
    assert not (tmp_path.parent / "outside").exists()
    shutil.rmtree(zipped)
    torch.save({}, tmp_path / "adapter_model.bin")
    with pytest.raises(DLPError, match="pickled"):
        adapter_folder([src / "adapter_config.json", tmp_path / "adapter_model.bin"], 2**20)
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as z:
        z.write(tmp_path / "adapter_model.bin", "adapter_model.bin")
    with pytest.raises(DLPError, match="pickled"):
        adapter_folder([tmp_path / "p.zip"], 2**20)
    with pytest.raises(DLPError, match="limit is 0 MB"):
        adapter_folder([src / "adapter_config.json", src / "adapter_model.safetensors"], 1000)
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(DLPError, match="not a readable zip"):
        adapter_folder([tmp_path / "bad.zip"], 2**20)
    with pytest.raises(DLPError, match="missing"):
        adapter_folder([src / "adapter_config.json"], 2**20)


def test_keep_for_everyone_writes_the_manifest_and_serves_everyone(tmp_path):
    """The page's local-only option: the adapter joins the manifest, the shared router and the running engine."""
    from dlp.adapter_admin import keep_for_everyone, remove

    manifest = tiny.build(tmp_path)
    engine = Engine(load_manifest(manifest))
    tiny.make_adapter(tiny.make_model(tiny.make_tokenizer()), tmp_path / "upload", seed=42, targets=("q_proj", "v_proj"))
    keep_for_everyone(engine, "mine", tmp_path / "upload", NEW)
    assert (tmp_path / "assets" / "adapters" / "mine" / "adapter_model.safetensors").is_file()
    assert "mine" in load_manifest(manifest).names and "mine" in engine.names
    for session in (None, "anyone"):
        probs = _probs(engine, session, "write python code for a list")
        assert max(probs, key=probs.get) == "mine"
    with pytest.raises(DLPError, match="already"):
        keep_for_everyone(engine, "mine", tmp_path / "upload", NEW)
    remove(manifest, "mine")  # the command line undoes it, as for add-adapter
    assert "mine" not in load_manifest(manifest).names
