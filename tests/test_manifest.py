import json

import pytest

from dlp.errors import DLPError
from dlp.manifest import load_manifest


def _write(tmp_path, data):
    path = tmp_path / "adapters_manifest.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_repo_manifest_is_valid():
    m = load_manifest()
    assert m.names == ["math", "code", "translate_fr", "sentiment", "science_qa", "summarize", "reading_qa"]
    assert m.base_sources[0].kind == "gguf_package"
    assert all(a.examples for a in m.adapters)


def test_tiny_manifest_resolves_relative_paths(tiny_manifest):
    m = load_manifest(tiny_manifest)
    assert m.adapters[0].location.startswith(str(tiny_manifest.parent))
    assert m.defaults.max_new_tokens == 8


GOOD = {"base": {"sources": [{"kind": "hub", "value": "x/y"}]}, "adapters": [{"name": "a", "path": "a"}]}


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("base"), "'base' is missing"),
    (lambda d: d["base"].update(sources=[]), "base.sources"),
    (lambda d: d["base"]["sources"][0].update(kind="ftp"), "base.sources[0].kind"),
    (lambda d: d["adapters"][0].pop("name"), "adapters[0].name"),
    (lambda d: d["adapters"].append({"name": "a", "path": "b"}), "adapters[1].name"),
    (lambda d: d["adapters"][0].update(hub="x/z"), "adapters[0]"),
    (lambda d: d["adapters"][0].update(color="red"), "adapters[0].color"),
    (lambda d: d.update(defaults={"top_p": 1.5}), "defaults.top_p"),
    (lambda d: d.update(defaults={"max_new_tokens": "lots"}), "defaults.max_new_tokens"),
    (lambda d: d.update(adapters={}), "'adapters' must be list"),
    (lambda d: d["adapters"][0].update(name="base"), "'base' is reserved"),
])
def test_errors_name_the_field_and_the_file(tmp_path, mutate, field):
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(DLPError) as err:
        load_manifest(path)
    assert field in str(err.value) and str(path) in str(err.value)


def test_malformed_json_and_missing_file(tmp_path):
    with pytest.raises(DLPError, match="not valid JSON"):
        load_manifest(_write(tmp_path, "{nope"))
    with pytest.raises(DLPError, match="not found"):
        load_manifest(tmp_path / "absent.json")
