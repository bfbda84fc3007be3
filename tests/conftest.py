import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "1")  # a closed session is noticed (unload runs) within seconds
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_manifest):
    from dlp.engine import Engine
    from dlp.manifest import load_manifest

    return Engine(load_manifest(tiny_manifest))


@pytest.fixture(scope="session")
def tiny_app_url(tiny_engine):
    """The real app on the tiny engine, launched once on a free loopback port."""
    import socket

    import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_demo(tiny_engine)
    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, css=app.CSS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
