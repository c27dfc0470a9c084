"""Loading bases and tokenizers from local directories, the same way for every caller.

One table of dtype names, one device rule, one list of tokenizer files, one tokenizer lookup, one
pad-id rule, and one place that calls `from_pretrained` for a causal LM, so that
`trust_remote_code` is off everywhere unless a caller passes the user's explicit request.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rmt_scale.errors import AdapterError, ConfigError, InputError, RMTScaleError, first_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The files of a Hugging Face tokenizer; whichever of them a directory has are copied with an adapter.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
# Any one of these makes a directory a tokenizer source.
_TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def parse_dtype(name: str | None, what: str = "dtype") -> torch.dtype | None:
    """`"bfloat16"` -> torch.bfloat16; None stays None (the checkpoint's own dtype)."""
    if name is None or name == "auto":
        return None
    if name not in DTYPES:
        raise ConfigError(f"unknown {what} {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_device(name: str | torch.device | None) -> torch.device:
    """`"auto"` (or None) -> CUDA when there is one, else CPU; `"cpu"`, `"cuda"`, `"cuda:N"` as given.

    Raises:
        InputError: Not a device name, or a CUDA device this machine does not have.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {str(name)!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {str(name)!r}: no CUDA device is available here; use cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {str(name)!r}: this machine has {count} CUDA device(s), "
                             f"cuda:0 .. cuda:{count - 1}")
    return device


def has_tokenizer(path: str | Path | None) -> bool:
    return path is not None and any((Path(path) / name).is_file() for name in _TOKENIZER_MARKERS)


def load_tokenizer(*candidates: str | Path | None, trust_remote_code: bool = False):
    """The tokenizer of the first candidate directory that has one, left-padding.

    Raises:
        AdapterError: None of the candidates holds tokenizer files, or they do not load.
    """
    from transformers import AutoTokenizer

    for candidate in candidates:
        if has_tokenizer(candidate):
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(candidate), trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError) as err:
                raise AdapterError(f"{candidate}: the tokenizer files do not load ({first_line(err)})") from None
            tokenizer.padding_side = "left"
            return tokenizer
    shown = ", ".join(str(c) for c in candidates if c is not None) or "nowhere"
    raise AdapterError(f"no tokenizer found (looked in {shown}); pass a directory that has tokenizer.json")


def pad_token_id(tokenizer=None, lm: nn.Module | None = None) -> int:
    """The id batches are padded with: the tokenizer's pad, the model's pad, then eos, then 0."""
    generation = getattr(lm, "generation_config", None)
    candidates = (getattr(tokenizer, "pad_token_id", None), getattr(generation, "pad_token_id", None),
                  getattr(tokenizer, "eos_token_id", None), getattr(generation, "eos_token_id", None))
    for value in candidates:
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def load_causal_lm(source: str | Path, trust_remote_code: bool = False, *,
                   error: type[RMTScaleError] = AdapterError, **kwargs) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained` on a local directory, remote code off by default.

    Args:
        source: The checkpoint directory.
        trust_remote_code: Run the checkpoint's own modelling code; only on the user's request.
        error: What a checkpoint that does not load raises (a GGUF import raises GGUFError).
        kwargs: Passed to `from_pretrained` (dtype, device_map, gguf_file, ...).

    Raises:
        AdapterError: (or `error`) The directory is missing or the checkpoint does not load.
    """
    from transformers import AutoModelForCausalLM

    path = Path(source).expanduser()
    if not path.is_dir():
        raise error(f"base checkpoint {source}: no such directory")
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, KeyError, NotImplementedError) as err:
        # NotImplementedError: an architecture or GGUF quantization transformers cannot read.
        shown = path / kwargs["gguf_file"] if kwargs.get("gguf_file") else path
        raise error(f"{shown}: cannot load the checkpoint ({first_line(err)})") from None
