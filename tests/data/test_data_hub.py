"""The babi_qa-schema loader on local fixtures of both story shapes, and its one-line failures."""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmt_scale.data import load_babi_hub
from rmt_scale.errors import DataError

LINES = [("1", 0, "Mary moved to the bathroom.", [], ""),
         ("2", 0, "John went to the hallway.", [], ""),
         ("3", 1, "Where is Mary?", ["1"], "bathroom"),
         ("4", 0, "Mary went to the garden.", [], ""),
         ("5", 1, "Where is Mary?", ["4"], "garden")]
KEYS = ("id", "type", "text", "supporting_ids", "answer")
# The features of facebook/babi_qa's script: a Sequence of a dict (stored as parallel lists).
SCRIPT_FEATURES = datasets.Features({"story": datasets.Sequence({
    "id": datasets.Value("string"),
    "type": datasets.ClassLabel(names=["context", "question"]),
    "text": datasets.Value("string"),
    "supporting_ids": datasets.Sequence(datasets.Value("string")),
    "answer": datasets.Value("string"),
})})


def story_as_lists() -> dict:
    return {key: [line[i] for line in LINES] for i, key in enumerate(KEYS)}


def story_as_lines() -> list[dict]:
    return [dict(zip(KEYS, line)) for line in LINES]


def check(samples) -> None:
    assert [(s.question, s.answer) for s in samples] == [("Where is Mary?", "bathroom"),
                                                        ("Where is Mary?", "garden")]
    assert samples[1].facts[-1] == "Mary went to the garden."
    assert samples[1].supporting_facts == (2,)


def test_saved_dataset_in_the_script_schema(tmp_path: Path) -> None:
    rows = datasets.Dataset.from_dict({"story": [story_as_lists()]}, features=SCRIPT_FEATURES)
    datasets.DatasetDict({"train": rows, "test": rows}).save_to_disk(tmp_path / "babi" / "en-qa1")
    check(load_babi_hub("qa1", str(tmp_path / "babi"), "test"))


def test_parquet_export_with_a_list_of_lines(tmp_path: Path) -> None:
    # Parquet exports and datasets >= 4 keep `story` as a list of line objects: the old loader
    # indexed it like a dict (story["id"]) and died with a TypeError traceback.
    folder = tmp_path / "export" / "en-qa1" / "train"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"story": story_as_lines()}]), folder / "0000.parquet")
    check(load_babi_hub("qa1", str(tmp_path / "export"), "train"))


def test_dataset_script_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    # What datasets >= 4 raises for facebook/babi_qa, which is a loading script.
    def script(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found babi_qa.py")

    monkeypatch.setattr(datasets, "load_dataset", script)
    with pytest.raises(DataError, match=r"facebook/babi_qa\[en-qa1/train\]: Dataset scripts are "
                                        r"no longer supported.*pass babi_dir") as err:
        load_babi_hub("qa1", "facebook/babi_qa", "train", hub_cache=tmp_path)
    assert "\n" not in str(err.value)


def test_unreachable_dataset_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # the real loader, no network
    with pytest.raises(DataError, match=r"nobody/no-babi\[en-qa2/test\]: cannot load") as err:
        load_babi_hub("qa2", "nobody/no-babi", "test", hub_cache=tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("rows, message", [
    ([{"text": "x"}], r":1: no field 'story'"),
    ([{"story": {"id": ["1"], "type": [0]}}], r":1: 'story' lacks \['text', 'supporting_ids'"),
])
def test_wrong_schema(tmp_path: Path, rows, message) -> None:
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "bad")
    with pytest.raises(DataError, match=message):
        load_babi_hub("qa1", str(tmp_path / "bad"), "train")


def test_local_directory_without_the_split(tmp_path: Path) -> None:
    folder = tmp_path / "export" / "en-qa1" / "train"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"story": story_as_lines()}]), folder / "0000.parquet")
    with pytest.raises(DataError, match=r"en-qa1/test\]: no data files for this config and split"):
        load_babi_hub("qa1", str(tmp_path / "export"), "test")
