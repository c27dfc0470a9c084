"""Tokenised BABILong and LM datasets (cached with `datasets`), and the left-padding collator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rmt_scale.data import (
    LeftPadCollator,
    babilong_dataset,
    format_prompt,
    lm_dataset,
    pipeline,
)
from rmt_scale.errors import DataError
from rmt_scale.model.segments import IGNORE_INDEX


def test_babilong_dataset_columns_and_labels(tokenizer, tmp_path: Path) -> None:
    ds = babilong_dataset("qa1", "1k", 6, tokenizer, seed=0, cache_dir=tmp_path)
    assert len(ds) == 6
    assert {"input_ids", "labels", "prompt_length", "answer", "question", "task"} <= set(
        ds.column_names)
    for row in ds:
        n = row["prompt_length"]
        ids, labels = row["input_ids"], row["labels"]
        assert len(ids) == len(labels)
        assert 0.97 * 1024 <= n <= 1024 + 8
        assert labels[:n] == [IGNORE_INDEX] * n
        assert labels[n:] == ids[n:] and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids[n:-1]) == f" {row['answer']}"
        assert tokenizer.decode(ids[:n]).endswith(f"\nQuestion: {row['question']}\nAnswer:")
        assert row["task"] == "qa1"


def test_babilong_dataset_is_cached_and_deterministic(tokenizer, tmp_path, monkeypatch) -> None:
    first = babilong_dataset("qa2", "0k", 5, tokenizer, seed=1, cache_dir=tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(pipeline, "build_babilong_sample", fail)
    again = babilong_dataset("qa2", "0k", 5, tokenizer, seed=1, cache_dir=tmp_path)
    assert again.cache_files == first.cache_files
    assert again["input_ids"] == first["input_ids"]
    monkeypatch.undo()
    # A fresh cache gives the same data; another seed gives other data.
    fresh = babilong_dataset("qa2", "0k", 5, tokenizer, seed=1, cache_dir=tmp_path / "other")
    assert fresh["input_ids"] == first["input_ids"]
    other = babilong_dataset("qa2", "0k", 5, tokenizer, seed=2, cache_dir=tmp_path)
    assert other["input_ids"] != first["input_ids"]


def test_babilong_0k_prompt_is_facts_and_question(tokenizer, tmp_path) -> None:
    ds = babilong_dataset("qa3", "0k", 3, tokenizer, cache_dir=tmp_path, keep_context=True)
    row = ds[0]
    prompt = format_prompt(row["context"], row["question"])
    assert row["input_ids"][: row["prompt_length"]] == tokenizer(prompt)["input_ids"]
    assert row["context"].startswith(("Mary ", "John ", "Sandra ", "Daniel "))


def test_generated_train_and_validation_differ(tokenizer, tmp_path) -> None:
    train = babilong_dataset("qa1", "0k", 20, tokenizer, cache_dir=tmp_path, split="train")
    valid = babilong_dataset("qa1", "0k", 20, tokenizer, cache_dir=tmp_path, split="validation")
    assert train["input_ids"] != valid["input_ids"]


def test_task_without_generator_or_files(tokenizer, tmp_path) -> None:
    with pytest.raises(DataError, match="babi_dir"):
        babilong_dataset("qa4", "1k", 2, tokenizer, cache_dir=tmp_path)


def test_babilong_from_real_files(tokenizer, tmp_path, babi_en, noise_books) -> None:
    train = babilong_dataset("qa5", "2k", 4, tokenizer, babi_dir=babi_en,
                             noise_files=noise_books[:1], cache_dir=tmp_path)
    valid = babilong_dataset("qa5", "2k", 4, tokenizer, babi_dir=babi_en,
                             noise_files=noise_books[:1], split="validation", cache_dir=tmp_path)
    assert len(train) == len(valid) == 4
    assert all(0.95 * 2048 <= n <= 2048 + 8 for n in train["prompt_length"])


def test_lm_dataset_shapes(tokenizer, tmp_path) -> None:
    (tmp_path / "a.txt").write_text("The fog drifted across the meadow. " * 300)
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfAn owl waited.\r\n\r\nThe tide spread.\r\n" * 200)
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    ds = lm_dataset(files, tokenizer, num_segments=3, segment_size=16, cache_dir=tmp_path / "c")
    assert len(ds) > 10
    assert all(len(row) == 48 for row in ds["input_ids"])
    assert ds["labels"] == ds["input_ids"]
    total = sum(len(tokenizer(p.read_text(encoding="utf-8-sig").replace("\r\n", "\n"),
                              add_special_tokens=False)["input_ids"]) + 1 for p in files)
    assert len(ds) == total // 48
    assert tokenizer.eos_token_id in {t for row in ds["input_ids"] for t in row}
    assert "\r" not in tokenizer.decode(ds[0]["input_ids"])


def test_lm_dataset_rejects_bad_arguments(tokenizer) -> None:
    with pytest.raises(DataError):
        lm_dataset([], tokenizer, 2, 8)


def test_collator_pads_left() -> None:
    collate = LeftPadCollator(pad_token_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                     {"input_ids": [8], "labels": [8], "answer": "x"}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, 8]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collator_multiple_and_no_labels() -> None:
    batch = LeftPadCollator(pad_token_id=9, pad_to_multiple_of=4)([{"input_ids": [1, 2, 3, 4, 5]}])
    assert batch["input_ids"].tolist() == [[9, 9, 9, 1, 2, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 1, 1]]
    assert "labels" not in batch


def test_collator_on_babilong_rows(tokenizer, tmp_path) -> None:
    ds = babilong_dataset("qa1", "0k", 4, tokenizer, cache_dir=tmp_path)
    batch = LeftPadCollator(tokenizer.pad_token_id)(list(ds))
    lengths = [len(row) for row in ds["input_ids"]]
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["input_ids"][:, -1] == tokenizer.eos_token_id).all()


def test_every_person_needs_qa1_stories_of_moves(tokenizer, tmp_path) -> None:
    with pytest.raises(DataError, match="for qa1, not qa2"):
        babilong_dataset("qa2", "0k", 4, tokenizer, cache_dir=tmp_path, every_person=True)
    # A story the generator could not ask about is a DataError naming the fact, before `datasets`
    # (which would hide it in a generation error of its own).
    babi = tmp_path / "babi"
    babi.mkdir()
    (babi / "qa1_single-supporting-fact_train.txt").write_text(
        "1 Mary went to the kitchen.\n2 Mary picked up the apple.\n3 Where is Mary? \tkitchen\t1\n")
    with pytest.raises(DataError, match="not a qa1 move .*'Mary picked up the apple.'"):
        babilong_dataset("qa1", 200, 4, tokenizer, cache_dir=tmp_path / "cache", babi_dir=babi,
                         valid_fraction=0.0, every_person=True)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.arrow"))
