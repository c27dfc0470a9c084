"""Loading bases and tokenizers from local directories, the same way for every caller.

One table of dtype names, one list of tokenizer files, one tokenizer lookup, one pad-id rule, and
one place that calls `from_pretrained` for a causal LM, so that `trust_remote_code` is off
everywhere unless a caller passes the user's explicit request.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rmt_scale.errors import AdapterError, ConfigError

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
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise AdapterError(f"{candidate}: the tokenizer files do not load ({first})") from None
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


def load_causal_lm(source: str | Path, trust_remote_code: bool = False, **kwargs) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained` on a local directory, remote code off by default.

    Raises:
        AdapterError: The directory is missing or the checkpoint does not load.
    """
    from transformers import AutoModelForCausalLM

    path = Path(source).expanduser()
    if not path.is_dir():
        raise AdapterError(f"base checkpoint {source}: no such directory")
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AdapterError(f"{path}: cannot load the checkpoint ({first})") from None
