"""Uploaded files -> a PEFT LoRA folder: ``adapter_config.json`` + ``adapter_model.safetensors``, loose or
in a zip. Pickled weights are refused by name before anything is read, and a zip is read member by member
(only those two names, by their base name, with a size cap), so a crafted archive cannot write outside the
folder or fill the disk.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from .errors import DLPError

NEEDED = ("adapter_config.json", "adapter_model.safetensors")
PICKLED = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
IGNORED = ("README.md", ".gitattributes")  # what a save_pretrained or hub folder also holds


def adapter_folder(files: list[str | Path], max_bytes: int) -> Path:
    """A new temporary folder holding the adapter; the caller deletes it (``shutil.rmtree``)."""
    files = [Path(f) for f in files or []]
    if not files:
        raise DLPError("No files uploaded",
                       hint="upload adapter_config.json and adapter_model.safetensors, or a zip of them")
    for f in files:
        if f.suffix.lower() in PICKLED:
            raise DLPError(f"{f.name} holds pickled weights, which can run code when loaded; they are refused",
                           hint="save the adapter with safe_serialization=True (adapter_model.safetensors)")
    folder = Path(tempfile.mkdtemp(prefix="dlp-upload-"))
    try:
        zips = [f for f in files if f.suffix.lower() == ".zip"]
        if zips:
            if len(files) > 1:
                raise DLPError("Upload either one zip or the loose files, not both")
            _unzip(zips[0], folder, max_bytes)
        else:
            for f in files:
                if f.name not in NEEDED and f.name not in IGNORED:
                    raise DLPError(f"Unexpected file {f.name}", hint=f"a LoRA adapter is {' + '.join(NEEDED)}")
                if f.stat().st_size > max_bytes:
                    raise DLPError(f"{f.name} is {f.stat().st_size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB")
                shutil.copyfile(f, folder / f.name)
        missing = [n for n in NEEDED if not (folder / n).is_file()]
        if missing:
            raise DLPError(f"{' and '.join(missing)} missing from the upload",
                           hint=f"a LoRA adapter is {' + '.join(NEEDED)} (what PEFT's save_pretrained writes)")
        return folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _unzip(path: Path, folder: Path, max_bytes: int) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise DLPError(f"{path.name} is not a readable zip file") from None
    with archive:
        for member in archive.infolist():
            base = Path(member.filename).name
            if member.is_dir() or not base:
                continue
            if Path(base).suffix.lower() in PICKLED:
                raise DLPError(f"The zip holds {base}, pickled weights, which can run code when loaded; refused",
                               hint="save the adapter with safe_serialization=True (adapter_model.safetensors)")
            if base not in NEEDED:
                continue
            if member.file_size > max_bytes:
                raise DLPError(f"{base} is {member.file_size / 2**20:.0f} MB unpacked; the limit is "
                               f"{max_bytes / 2**20:.0f} MB")
            if (folder / base).exists():
                raise DLPError(f"The zip holds more than one {base}", hint="zip one adapter at a time")
            with archive.open(member) as src, open(folder / base, "wb") as dst:
                copied = 0
                while chunk := src.read(1 << 20):  # counted as read: a member's declared size can lie
                    copied += len(chunk)
                    if copied > max_bytes:
                        raise DLPError(f"{base} is over {max_bytes / 2**20:.0f} MB unpacked")
                    dst.write(chunk)
