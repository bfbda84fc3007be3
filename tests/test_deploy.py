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
