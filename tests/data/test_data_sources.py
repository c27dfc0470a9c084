"""Reading user sources: every file type, directories, globs, saved datasets, the Hub cache, errors."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmt_scale.data import holdout_split, resolve_sources
from rmt_scale.data.sources import read_rows
from rmt_scale.errors import DataError

ROWS = [{"text": "First document.", "n": 1}, {"text": "Second document.", "n": 2}]


def rows_of(source, **kwargs) -> list[tuple[str, dict]]:
    return [(row.location, dict(row.values)) for row in read_rows(resolve_sources(source, **kwargs))]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_every_table_format_gives_the_same_rows_with_locations(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "a.jsonl", ROWS)
    array = tmp_path / "b.json"
    array.write_text(json.dumps(ROWS))
    columns = tmp_path / "c.json"  # pandas' default to_json layout
    columns.write_text(json.dumps({"text": {"0": ROWS[0]["text"], "1": ROWS[1]["text"]},
                                   "n": {"0": 1, "1": 2}}))
    lines = write_jsonl(tmp_path / "d.json", ROWS)  # JSON lines under a .json name
    parquet = tmp_path / "e.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    for path in (jsonl, array, columns, lines, parquet):
        assert rows_of(path) == [(f"{path}:1", ROWS[0]), (f"{path}:2", ROWS[1])], path


def test_jsonl_locations_are_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    assert [loc for loc, _ in rows_of(path)] == [f"{path}:1", f"{path}:3"]


def test_directories_globs_and_text_files(tmp_path: Path) -> None:
    (tmp_path / "books" / "more").mkdir(parents=True)
    (tmp_path / "books" / "b.txt").write_text("Book B.")
    (tmp_path / "books" / "more" / "a.txt").write_text("Book A.")
    (tmp_path / "books" / "notes.csv").write_text("ignored")
    found = [s.path for s in resolve_sources(tmp_path / "books")]
    assert found == [str(tmp_path / "books" / "b.txt"), str(tmp_path / "books" / "more" / "a.txt")]
    assert rows_of(str(tmp_path / "books" / "**" / "*.txt"))[1][1] == {"text": "Book A."}


def test_saved_dataset_directory_and_its_splits(tmp_path: Path) -> None:
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(ROWS),
        "test": datasets.Dataset.from_list(ROWS[:1]),
    }).save_to_disk(tmp_path / "saved")
    sources = resolve_sources(tmp_path / "saved")
    assert [s.kind for s in sources] == ["saved"]
    with pytest.raises(DataError, match="choose a split: train, test"):
        rows_of(sources)
    sources = [type(sources[0])("saved", str(tmp_path / "saved"), split="test")]
    assert rows_of(sources) == [(f"{tmp_path / 'saved'}/test:1", ROWS[0])]


def test_dataset_name_reads_the_hub_cache_snapshot_offline(tmp_path: Path) -> None:
    # The layout huggingface_hub keeps: refs/main names the snapshot folder.
    repo = tmp_path / "hub" / "datasets--someone--books"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    files = repo / "snapshots" / "abc123" / "default"
    files.mkdir(parents=True)
    write_jsonl(files / "train-00000-of-00001.jsonl", ROWS)
    write_jsonl(files / "test-00000-of-00001.jsonl", ROWS[:1])
    assert len(rows_of("someone/books", hub_cache=tmp_path / "hub")) == 3
    assert rows_of("someone/books:default:test", hub_cache=tmp_path / "hub")[0][1] == ROWS[0]


def test_unknown_name_is_a_one_line_error_without_network(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not in the local Hugging Face cache") as err:
        rows_of("nobody/no-such-dataset-here", hub_cache=tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n{"text": "b",\n', r"bad\.jsonl:2: not valid JSON"),
    ('{"text": "a"}\n[1, 2]\n', r"bad\.jsonl:2: expected a JSON object"),
])
def test_jsonl_that_does_not_parse(tmp_path: Path, content, message) -> None:
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        rows_of(tmp_path / "bad.jsonl")


def test_json_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('[{"text": "a"},\n {"text": }]')
    with pytest.raises(DataError, match=r"bad\.json:2: not valid JSON"):
        rows_of(tmp_path / "bad.json")


def test_parquet_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read as parquet"):
        rows_of(tmp_path / "bad.parquet")


@pytest.mark.parametrize("name", ["book.txt", "rows.jsonl"])
def test_non_utf8_names_file_and_line(tmp_path: Path, name) -> None:
    (tmp_path / name).write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=rf"{name}:2: bytes that are not UTF-8"):
        rows_of(tmp_path / name)


def test_missing_and_mistyped_fields_name_field_file_and_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}, {"body": "b"}, {"text": 3}])
    rows = list(read_rows(resolve_sources(path)))
    assert rows[0].get("text") == "a"
    with pytest.raises(DataError, match=r"rows\.jsonl:2: no field 'text' \(fields: 'body'\)"):
        rows[1].get("text")
    with pytest.raises(DataError, match=r"rows\.jsonl:3: field 'text' is int, expected text"):
        rows[2].get("text")


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        resolve_sources(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="matches no"):
        resolve_sources(str(tmp_path / "*.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="directory has no"):
        resolve_sources(tmp_path / "empty")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(DataError, match="unsupported file type .csv"):
        resolve_sources(tmp_path / "data.csv")
    with pytest.raises(DataError, match="no data sources"):
        resolve_sources([])


def test_holdout_split_keeps_groups_together_and_is_fixed_by_seed() -> None:
    keys = ["a", "a", "b", "c", "c", "c", "d", "e"]
    train, valid = holdout_split(keys, 0.4, seed=3)
    assert sorted(train + valid) == list(range(len(keys)))
    assert not {keys[i] for i in train} & {keys[i] for i in valid}
    assert len({keys[i] for i in valid}) == 2
    assert holdout_split(keys, 0.4, seed=3) == (train, valid)
    assert holdout_split(["a", "b"], 0.9)[0]  # something is always left to train on
    with pytest.raises(DataError, match="cannot hold out"):
        holdout_split(["a", "a"], 0.1)
