"""The CLI as a user runs it: JSON lines, and bad input as one line with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def dlp(*args, check_rc=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "dlp", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


def test_route_json_lines(tiny_manifest):
    out = dlp("route", "--manifest", str(tiny_manifest), "--json", "--top-p", "0.7", "what is two", "translate it",
              check_rc=0).stdout.strip().splitlines()
    assert len(out) == 2
    row = json.loads(out[0])
    assert {"prompt", "probs", "selected", "router_ms", "top_p", "min_weight", "dropped"} <= set(row)
    assert abs(sum(row["selected"].values()) - 1) < 1e-5 and row["min_weight"] == 0.0 and row["dropped"] == []
    floored = json.loads(dlp("route", "--manifest", str(tiny_manifest), "--json", "--top-p", "1.0", "--min-weight",
                             "0.34", "what is two", check_rc=0).stdout)
    assert len(floored["selected"]) < len(floored["probs"]) and floored["dropped"], "tails left out, and said so"


def test_compare_and_generate_json(tiny_manifest):
    row = json.loads(dlp("compare", "--manifest", str(tiny_manifest), "--json", "what is two", check_rc=0).stdout)
    assert [c["key"] for c in row["columns"]][0] == "base" and row["columns"][-1]["key"] == "fused"
    row = json.loads(dlp("generate", "--manifest", str(tiny_manifest), "--json", "--mode", "adapter:beta",
                         "--max-new-tokens", "3", "what is two", check_rc=0).stdout)
    assert row["timing"]["tokens"] <= 3
    row = json.loads(dlp("compare", "--manifest", str(tiny_manifest), "--json", "--top-p", "1.0", "--fusion", "sum",
                         "--max-new-tokens", "3", "what is two", check_rc=0).stdout)
    assert [c["key"] for c in row["columns"]][-2:] == ["fused", "fused:sum"]
    assert set(row["columns"][-1]["mixture"].values()) == {1.0}


@pytest.mark.parametrize("args, message", [
    (["route", "  "], "prompt is empty"),
    (["route", "--top-p", "0", "hi"], "top-p"),
    (["route", "--top-k", "-1", "hi"], "top-k"),
    (["generate", "--mode", "adapter:nope", "hi"], "Unknown adapter 'nope'"),
    (["generate", "--max-new-tokens", "0", "hi"], "max new tokens"),
    (["generate", "--mode", "base", "two " * 300], "limit is 64"),
    (["generate", "--fusion", "blend", "hi"], "Unknown fusion method 'blend'"),
    (["generate", "--fusion", "token", "hi"], "has not been trained"),
])
def test_bad_input_one_line_exit_2(tiny_manifest, args, message):
    proc = dlp(args[0], "--manifest", str(tiny_manifest), *args[1:])
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_malformed_manifest_exit_2(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text('{"base": {"sources": []}, "adapters": []}')
    proc = dlp("route", "--manifest", str(bad), "hi")
    assert proc.returncode == 2 and "base.sources" in proc.stderr and "Traceback" not in proc.stderr
