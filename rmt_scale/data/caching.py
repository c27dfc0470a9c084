"""Cache keys for the datasets built here.

The builders pass an explicit fingerprint to ``datasets`` so that a second run with the same inputs
reuses the Arrow files in the cache directory. The key covers every input that changes the
result: arguments, the tokenizer, and the size and modification time of every input file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets.fingerprint import Hasher

from rmt_scale.errors import DataError

# Bump when the layout or content of a built dataset changes for the same inputs.
FORMAT_VERSION = 1


def file_stamps(paths: Iterable[str | Path]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each file: a cheap stand-in for hashing the contents.

    Raises:
        DataError: A file does not exist.
    """
    stamps = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"{path}: no such file")
        stat = Path(path).stat()
        stamps.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    return stamps


def tokenizer_hash(tokenizer: Any) -> str:
    """A hash of the tokenizer: vocabulary, merges, normaliser, special tokens and class."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        # Slow (Python) tokenizers: let `datasets` hash the whole object.
        return Hasher.hash(tokenizer)
    payload = json.dumps([type(tokenizer).__name__, backend.to_str(),
                          tokenizer.special_tokens_map, getattr(tokenizer, "padding_side", None)],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_key(kind: str, **parts: Any) -> str:
    """A fingerprint string for ``datasets`` from JSON-serialisable ``parts``."""
    payload = json.dumps({"kind": kind, "version": FORMAT_VERSION, **parts}, sort_keys=True,
                         default=str)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"
