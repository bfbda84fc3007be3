import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
