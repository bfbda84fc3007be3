"""What a Hugging Face Space push needs from the repository as it stands."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_front_matter_pins_the_gradio_of_requirements():
    front = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("---")[1]
    sdk = re.search(r"^sdk_version:\s*(\S+)", front, re.M).group(1)
    pin = re.search(r"^gradio==(\S+)", ROOT.joinpath("requirements.txt").read_text(), re.M).group(1)
    assert sdk == pin
    assert re.search(r'^python_version:\s*"3\.\d+"', front, re.M)


def test_no_tracked_file_over_ten_megabytes():
    """A git push to the hub refuses files over 10 MiB that are not in LFS."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    big = [f for f in files if (ROOT / f).is_file() and (ROOT / f).stat().st_size > 10 * 2**20]
    assert big == []


def test_run_records_older_than_an_hour_are_pruned(monkeypatch, tmp_path):
    import os
    import time

    from ui import compare

    monkeypatch.setattr(compare, "_EXPORTS", tmp_path)
    old = compare.export_path()
    old.write_text("{}")
    hour_ago = time.time() - compare.EXPORT_TTL - 5
    os.utime(old.parent, (hour_ago, hour_ago))
    fresh = compare.export_path()
    fresh.write_text("{}")
    new = compare.export_path()
    assert not old.parent.exists() and fresh.exists() and new.parent.exists()


def test_the_page_prunes_gradios_file_cache(tiny_engine):
    """Uploaded adapters (up to 64 MB each) and run records must not pile up on a long-lived Space."""
    import app

    assert app.build_demo(tiny_engine).delete_cache == (3600, 3600)
