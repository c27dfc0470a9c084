"""A language-modelling dataset: long plain text cut into samples of whole segment runs.

Each sample is ``num_segments * segment_size`` tokens of contiguous text with
``labels == input_ids`` (the model shifts labels itself), for recurrent-memory training and for
per-segment perplexity. Files are read as UTF-8 (Project Gutenberg header and license stripped,
line endings normalised), tokenised, joined with EOS between files, and cut into blocks; a tail
shorter than a block is dropped. Both steps are cached in ``cache_dir`` like
:func:`rmt_scale.data.babilong_dataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets

from rmt_scale.data.caching import cache_key, file_stamps, tokenizer_hash
from rmt_scale.data.noise import normalize_text, strip_gutenberg
from rmt_scale.data.text import read_utf8
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

# Characters per text record: big enough for fast batch tokenisation, small enough that one
# `map` batch stays a few MB. Records are cut at paragraph ends.
_CHUNK_CHARS = 1 << 16
# Text chunks grouped together when cutting blocks (bounds the memory of one map step).
_GROUP_CHUNKS = 128


def _read_chunks(files: Sequence[str], strip_license: bool) -> Iterator[dict[str, Any]]:
    """Generator for ``Dataset.from_generator``: paragraph-aligned text chunks of each file."""
    for file_index, path in enumerate(files):
        text = read_utf8(path)
        text = strip_gutenberg(text) if strip_license else normalize_text(text)
        start = 0
        while start < len(text):
            end = text.find("\n\n", start + _CHUNK_CHARS)
            end = len(text) if end < 0 else end + 2
            yield {"text": text[start:end], "file": file_index, "last": end == len(text)}
            start = end


def _tokenize(batch: dict[str, list], tokenizer: Any) -> dict[str, list]:
    ids = tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]
    eos = tokenizer.eos_token_id
    # EOS marks the end of each file so the model does not read one book as the next's sequel.
    return {"input_ids": [row + [eos] if last and eos is not None else row
                          for row, last in zip(ids, batch["last"], strict=True)]}


def _group(batch: dict[str, list], block: int) -> dict[str, list]:
    flat = [token for row in batch["input_ids"] for token in row]
    blocks = [flat[i: i + block] for i in range(0, len(flat) - block + 1, block)]
    return {"input_ids": blocks, "labels": [list(b) for b in blocks]}


def lm_dataset(
    files: Sequence[str | Path],
    tokenizer: Any,
    num_segments: int,
    segment_size: int,
    *,
    cache_dir: str | Path | None = None,
    strip_license: bool = True,
) -> datasets.Dataset:
    """Cut text files into language-modelling samples of ``num_segments * segment_size`` tokens.

    Args:
        files: UTF-8 plain-text files, read in this order.
        tokenizer: The model's Hugging Face tokenizer.
        num_segments: Segments per sample.
        segment_size: Tokens per segment.
        cache_dir: Where ``datasets`` keeps the Arrow files; default: the HF datasets cache.
        strip_license: Remove Project Gutenberg header and license when the markers are present.

    Returns:
        A dataset with ``input_ids`` and ``labels`` (equal lists of ints).

    Raises:
        DataError: For no files, non-positive sizes, or a file that is not UTF-8.
    """
    if not files:
        raise DataError("lm_dataset needs at least one text file")
    if num_segments < 1 or segment_size < 1:
        raise DataError(f"num_segments and segment_size must be >= 1, got {num_segments}, "
                        f"{segment_size}")
    files = [str(path) for path in files]
    block = num_segments * segment_size
    key = cache_key("lm-text", files=file_stamps(files), strip_license=strip_license,
                    chunk=_CHUNK_CHARS)
    try:
        text = datasets.Dataset.from_generator(
            _read_chunks,
            features=datasets.Features({"text": datasets.Value("string"),
                                        "file": datasets.Value("int32"),
                                        "last": datasets.Value("bool")}),
            cache_dir=None if cache_dir is None else str(cache_dir),
            fingerprint=key,
            # A tuple, not a list: `datasets` shards list-valued gen_kwargs into separate calls.
            gen_kwargs={"files": tuple(files), "strip_license": strip_license},
        )
    except datasets.exceptions.DatasetGenerationError as err:
        # `datasets` wraps what the generator raised; a file's own DataError is the message to show.
        if isinstance(err.__cause__, DataError):
            raise err.__cause__ from None
        raise
    tok_key = cache_key("lm-tokens", text=key, tokenizer=tokenizer_hash(tokenizer))
    tokens = text.map(_tokenize, batched=True, batch_size=64, fn_kwargs={"tokenizer": tokenizer},
                      remove_columns=text.column_names, new_fingerprint=tok_key,
                      desc="Tokenizing text")
    # Blocks run across chunk and file boundaries within a map batch; each batch's tail shorter
    # than a block is dropped (< 1 block per ~8 MB of text), as in transformers' run_clm.
    return tokens.map(_group, batched=True, batch_size=_GROUP_CHUNKS, fn_kwargs={"block": block},
                      new_fingerprint=cache_key("lm-blocks", tokens=tok_key, block=block,
                                                group=_GROUP_CHUNKS),
                      desc=f"Grouping into {num_segments} x {segment_size} tokens")
