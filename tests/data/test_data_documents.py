"""Long documents: tokenised once (cached), cut into windows that respect document boundaries."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmt_scale.data import (
    TextWindows,
    document_dataset,
    documents,
    holdout_split,
    plan_windows,
    window_counts,
)
from rmt_scale.errors import DataError

TEXTS = {
    "long.txt": "It was the best of times, it was the worst of times. " * 40,
    "mid.txt": "Mary moved to the bathroom. John went to the hallway. " * 6,
    "tiny.txt": "Call me Ishmael.",
}


@pytest.fixture
def books(tmp_path: Path) -> Path:
    folder = tmp_path / "books"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text)
    return folder


def test_document_per_file_and_per_row_with_field(tokenizer, books, tmp_path: Path) -> None:
    docs = document_dataset(books, tokenizer, cache_dir=tmp_path / "cache")
    assert list(docs["source"]) == [f"{books / name}:1" for name in sorted(TEXTS)]
    for row, name in zip(docs, sorted(TEXTS), strict=True):
        assert tokenizer.decode(row["input_ids"]) == TEXTS[name]
        assert row["num_tokens"] == len(row["input_ids"])
    rows = [{"body": text} for text in TEXTS.values()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "docs.parquet")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    for source in ("docs.parquet", "docs.jsonl", "saved"):
        table = document_dataset(tmp_path / source, tokenizer, field="body",
                                 cache_dir=tmp_path / "cache")
        assert [tokenizer.decode(ids) for ids in table["input_ids"]] == list(TEXTS.values())


def test_second_call_reads_the_cache(tokenizer, books, tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = documents._tokenize

    def counting(batch, tokenizer):
        calls.append(len(batch["text"]))
        return real(batch, tokenizer)

    monkeypatch.setattr(documents, "_tokenize", counting)
    first = document_dataset(books, tokenizer, cache_dir=tmp_path / "cache")
    assert sum(calls) == len(TEXTS)
    second = document_dataset(books, tokenizer, cache_dir=tmp_path / "cache")
    assert sum(calls) == len(TEXTS), "the second call tokenised again"
    assert second["input_ids"] == first["input_ids"]
    (books / "tiny.txt").write_text("Call me Ishmael. Some years ago.")  # a changed file
    document_dataset(books, tokenizer, cache_dir=tmp_path / "cache")
    assert sum(calls) == 2 * len(TEXTS)


def test_windows_never_cross_a_document_boundary(tokenizer, books, tmp_path: Path) -> None:
    docs = document_dataset(books, tokenizer, cache_dir=tmp_path / "cache")
    lengths = list(docs["num_tokens"])
    window = lengths[1] - 3  # "mid" fits one window, "long" several, "tiny" none
    plan = plan_windows(lengths, window)
    windows = TextWindows(docs, plan)
    assert plan.long_documents == 2 and plan.short_documents == 1
    assert len(windows) == lengths[0] // window + 1
    for index, pieces in enumerate(plan.windows):
        ((doc, start, end),) = pieces  # one piece: one document
        sample = windows[index]
        assert sample["input_ids"] == docs[doc]["input_ids"][start:end]
        assert sample["labels"] == sample["input_ids"] and len(sample["input_ids"]) == window
    tails = lengths[0] % window + lengths[1] % window
    assert plan.dropped_tokens == tails + lengths[2]  # the skipped short document is counted


def test_pack_policy_joins_short_documents_with_a_separator() -> None:
    plan = plan_windows([3, 10, 4, 2], window=5, short_documents="pack")
    # doc 1 gives two windows; docs 0, 2, 3 make the stream 0 0 0 | 2 2 2 2 | 3 3 (11 tokens).
    assert plan.windows[:2] == [((1, 0, 5),), ((1, 5, 10),)]
    assert plan.windows[2:] == [((0, 0, 3), (-1, 0, 1), (2, 0, 1)),
                                ((2, 1, 4), (-1, 0, 1), (3, 0, 1))]
    assert (plan.short_documents, plan.dropped_tokens) == (3, 1)
    assert "3 shorter packed" in str(plan)


def test_packed_windows_carry_the_separator(tokenizer, books, tmp_path: Path) -> None:
    docs = document_dataset(books, tokenizer, cache_dir=tmp_path / "cache")
    lengths = list(docs["num_tokens"])
    plan = plan_windows(lengths, lengths[0] + 1, short_documents="pack")
    assert plan.long_documents == 0 and len(plan.windows) == 1
    sample = TextWindows(docs, plan, separator_id=tokenizer.eos_token_id)[0]
    eos = tokenizer.eos_token_id
    assert sample["input_ids"][:lengths[0] + 1] == docs[0]["input_ids"] + [eos]
    with pytest.raises(DataError, match="needs a separator"):
        TextWindows(docs, plan, separator_id=None)


def test_window_counts_per_stage_and_stages_without_windows() -> None:
    plans = window_counts([100, 40, 10], segment_size=10, stages=[1, 4, 8])
    assert {n: len(p.windows) for n, p in plans.items()} == {1: 15, 4: 3, 8: 1}
    with pytest.raises(DataError, match=r"no window of 16 segments x 10 tokens: the longest of 3 "
                                        r"documents has 100 tokens"):
        window_counts([100, 40, 10], segment_size=10, stages=[1, 16])
    assert len(window_counts([100, 40, 10], 10, [5], "pack")[5].windows) == 3  # 2 + 1 packed
    with pytest.raises(DataError, match="even packed, the 3 documents have 150 tokens"):
        window_counts([100, 40, 10], segment_size=10, stages=[16], short_documents="pack")


def test_validation_documents_are_held_out_whole(tokenizer, books, tmp_path: Path) -> None:
    docs = document_dataset(books, tokenizer, cache_dir=tmp_path / "cache")
    train, valid = holdout_split(list(range(len(docs))), 0.34, seed=0)
    assert len(valid) == 1 and sorted(train + valid) == [0, 1, 2]
    assert plan_windows(list(docs.select(valid)["num_tokens"]), 8).windows


@pytest.mark.parametrize("write, message", [
    (lambda d: (d / "empty.txt").write_text("  \n"), r"empty\.txt:1: empty document"),
    (lambda d: (d / "r.jsonl").write_text('{"text": "ok"}\n{"text": ""}\n'), r"r\.jsonl:2: empty"),
    (lambda d: (d / "r.jsonl").write_text('{"content": "ok"}\n'),
     r"r\.jsonl:1: no field 'text' \(fields: 'content'\)"),
    (lambda d: (d / "bad.txt").write_bytes(b"ok\n\xff\xfe"), r"bad\.txt:2: bytes that are not UTF-8"),
])
def test_bad_documents(tokenizer, tmp_path: Path, write, message) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder)
    with pytest.raises(DataError, match=message) as err:
        document_dataset(folder, tokenizer, cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_empty_table_is_an_error(tokenizer, tmp_path: Path) -> None:
    (tmp_path / "none.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no documents"):
        document_dataset(tmp_path / "none.jsonl", tokenizer, cache_dir=tmp_path / "cache")
