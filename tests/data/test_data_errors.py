"""Bad input files are DataErrors that name the file, also where `datasets` runs the reading."""

from __future__ import annotations

import pytest

from rmt_scale.data import babilong_dataset, lm_dataset
from rmt_scale.data.collate import LeftPadCollator
from rmt_scale.data.text import read_utf8
from rmt_scale.errors import DataError


def test_text_that_is_not_utf8_names_the_file_and_line(tokenizer, tmp_path):
    book = tmp_path / "book.txt"
    book.write_bytes(b"A first line.\n\nA second \xff line.\n")
    # Read inside a `datasets` generator, which wraps what it raises: the DataError comes out.
    with pytest.raises(DataError, match=r"book.txt:3: bytes that are not UTF-8"):
        lm_dataset([book], tokenizer, 2, 4, cache_dir=tmp_path / "cache")


def test_missing_files(tokenizer, tmp_path):
    with pytest.raises(DataError, match="missing.txt: no such file"):
        lm_dataset([tmp_path / "missing.txt"], tokenizer, 2, 4, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="none: not a directory of bAbI files"):
        babilong_dataset("qa1", "0k", 2, tokenizer, babi_dir=tmp_path / "none", cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="missing.txt: no such file"):
        babilong_dataset("qa1", "0k", 2, tokenizer, noise_files=[tmp_path / "missing.txt"],
                         cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="cannot read this file"):
        read_utf8(tmp_path)  # a directory


def test_collating_bad_batches():
    collate = LeftPadCollator(pad_token_id=0)
    with pytest.raises(DataError, match="empty batch"):
        collate([])
    with pytest.raises(DataError, match="sample 0: 1 labels for 2 input_ids"):
        collate([{"input_ids": [5, 6], "labels": [5]}])
