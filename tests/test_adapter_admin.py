"""Bring your own adapter: add-adapter / remove-adapter on the tiny model, and every bad upload refused."""

import json
import shutil

import pytest
import torch

import tiny
from dlp.cli import main
from dlp.engine import Routing
from dlp.manifest import load_manifest

NEW = ["please write python code for the list", "python function code for a list please",
       "write code in python that sums a list", "python code to write a function", "a python function for this list",
       "code a python list function"]


@pytest.fixture()
def world(tmp_path):
    manifest = tiny.build(tmp_path)
    tok = tiny.make_tokenizer()
    tiny.make_adapter(tiny.make_model(tok), tmp_path / "mine", seed=42, targets=("q_proj", "v_proj"), r=4)
    examples = tmp_path / "examples.jsonl"
    examples.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in NEW))
    return tmp_path, manifest, examples


def _route(manifest, prompt):
    return Routing.from_manifest(load_manifest(manifest)).route(prompt, top_p=1.0).probs


def test_add_route_remove_round_trip(world, capsys):
    root, manifest, examples = world
    before = {p: _route(manifest, p) for p in ("what is alpha two three", "translate the food review")}
    assert main(["add-adapter", "--name", "mine", "--path", "mine", "--examples", str(examples),
                 "--manifest", str(manifest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == "mine"
    m = load_manifest(manifest)
    assert "mine" in m.names and m.adapter("mine").location == str((root / "mine").resolve())
    probs = _route(manifest, "write python code for a list")
    assert max(probs, key=probs.get) == "mine"
    assert main(["remove-adapter", "--name", "mine", "--manifest", str(manifest)]) == 0
    assert "mine" not in load_manifest(manifest).names
    for prompt, probs in before.items():
        again = _route(manifest, prompt)
        assert again.keys() == probs.keys()
        assert all(abs(again[k] - probs[k]) < 1e-6 for k in probs)  # exactly the router it was


@pytest.mark.parametrize("case, message", [
    ("pickled", "pickled"), ("other_base", "another base model"), ("corrupt", "cannot read"), ("rank", "rank"),
    ("few", "at least 5"), ("taken", "already"), ("reserved", "reserved"),
])
def test_bad_adapters_are_refused_and_leave_nothing(world, capsys, case, message):
    root, manifest, examples = world
    folder, name = root / "mine", "mine"
    if case == "pickled":
        (folder / "adapter_model.safetensors").unlink()
        torch.save({}, folder / "adapter_model.bin")
    elif case == "other_base":
        shutil.rmtree(folder)
        tiny.make_foreign_adapter(folder)
    elif case == "corrupt":
        (folder / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    elif case == "rank":
        shutil.rmtree(folder)
        tok = tiny.make_tokenizer()
        import dlp.adapter_admin as admin

        admin.MAX_RANK = 2  # the tiny model cannot hold a rank-257 LoRA; lower the cap instead
        tiny.make_adapter(tiny.make_model(tok), folder, seed=1, targets=("q_proj",), r=4)
    elif case == "few":
        examples.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in NEW[:3]))
    elif case == "taken":
        name = "alpha"
    elif case == "reserved":
        name = "base"
    manifest_before = manifest.read_text()
    router_before = (manifest.parent / "router" / "router.safetensors").read_bytes()
    try:
        code = main(["add-adapter", "--name", name, "--path", "mine", "--examples", str(examples),
                     "--manifest", str(manifest)])
    finally:
        import dlp.adapter_admin as admin

        admin.MAX_RANK = 256
    assert code == 2
    assert message in capsys.readouterr().err
    assert manifest.read_text() == manifest_before
    assert (manifest.parent / "router" / "router.safetensors").read_bytes() == router_before
