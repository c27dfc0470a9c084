"""Merging `rmt-scale eval` results: one model's cells at other lengths become one table; cells of
another model or other data, or a cell given twice, are refused."""

from __future__ import annotations

import json

import pytest

from rmt_scale.errors import InputError
from rmt_scale.evaluation.results_files import accuracy_table, merge_results, read_results

MODEL = {"path": "runs/a/final", "kind": "memory", "base": "B", "rmt_config": {"num_mem_tokens": 4},
         "carry_memory": True}
DATA = {"seed": 0, "split": "validation", "babi_dir": "babi", "noise": ["book.txt"], "batch_size": 8}


def write(path, lengths, samples, accuracy, model=MODEL, **data):
    path.mkdir(parents=True)
    results = {"model": model, "settings": {"tasks": ["qa1"], "lengths": lengths, "samples": samples,
                                            **DATA, **data},
               "results": [{"task": "qa1", "length": n, "samples": samples, "accuracy": accuracy}
                           for n in lengths],
               "labels": {"qa1": ["garden"]}, "predictions": [{"output": " garden"}]}
    (path / "results.json").write_text(json.dumps(results))
    return path


def test_merged_lengths_are_in_token_order_with_the_samples_of_each(tmp_path):
    long = write(tmp_path / "long", ["16k"], 24, 0.625)
    short = write(tmp_path / "short", ["512", "4k"], 48, 0.75)
    merged = merge_results([long, short / "results.json"])  # a directory or its results.json
    assert merged["model"] == MODEL and merged["settings"]["noise"] == ["book.txt"]
    assert merged["settings"]["lengths"] == ["512", "4k", "16k"]
    assert merged["settings"]["samples"] == {"512": 48, "4k": 48, "16k": 24}
    assert "predictions" not in merged and merged["labels"] == {"qa1": ["garden"]}
    assert accuracy_table(merged).splitlines()[-1] == "| qa1 | 0.75 | 0.75 | 0.62 |"


@pytest.mark.parametrize("other", [
    {"model": {**MODEL, "carry_memory": False}},  # --no-carry is another model
    {"model": {**MODEL, "base": "C"}},
    {"noise": ["other_book.txt"]},
    {"split": "train"},
])
def test_cells_of_another_model_or_data_are_refused(tmp_path, other):
    first = write(tmp_path / "a", ["512"], 48, 0.5)
    second = write(tmp_path / "b", ["4k"], 48, 0.5, **other)
    with pytest.raises(InputError, match="evaluate different") as err:
        merge_results([first, second])
    assert "\n" not in str(err.value)


def test_the_model_path_may_differ(tmp_path):
    # The same adapter evaluated from its run directory and from where it was exported to.
    first = write(tmp_path / "a", ["512"], 48, 0.5)
    second = write(tmp_path / "b", ["4k"], 48, 0.5, model={**MODEL, "path": "pretrained/a"})
    assert merge_results([first, second])["settings"]["lengths"] == ["512", "4k"]


def test_unreadable_results_are_one_line_errors(tmp_path):
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "other.json").write_text('{"a": 1}')
    for path, message in ((tmp_path / "missing", "missing"), (tmp_path / "binary.json", "not a text file"),
                          (tmp_path / "other.json", "not the results")):
        with pytest.raises(InputError, match=message):
            read_results(path)
