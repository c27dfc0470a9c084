"""The official BABILong layout read offline, its prompt, and scoring like babilong/metrics.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmt_scale.data import (
    BABILONG_PROMPTS,
    babilong_layout,
    babilong_official_dataset,
    babilong_prompt,
)
from rmt_scale.errors import DataError
from rmt_scale.evaluation.scoring import BABILONG_TASK_LABELS, compare_answers

HAYSTACK = "The fog drifted across the quiet meadow. "

# (task, target, model output, question, what babilong/metrics.py compare_answers returns):
# the expected values were computed with the official function (booydar/babilong @ 7a6efee).
KNOWN_OUTPUTS = [
    ("qa1", "kitchen", " kitchen", "Where is Mary?", True),
    ("qa1", "kitchen", "The most recent location of Mary is kitchen.", "Where is Mary?", True),
    ("qa1", "kitchen", "Mary is in the garden. Earlier: kitchen.", "Where is Mary?", False),
    ("qa1", "kitchen", " Kitchen\nQuestion: Where is the garden?", "Where is Mary?", False),
    ("qa1", "kitchen", "kitchen <example> garden", "Where is Mary?", True),
    ("qa1", "kitchen", "kitchen\n<context>\nThe garden", "Where is Mary?", True),
    ("qa1", "kitchen", "kitchen or garden", "Where is Mary?", False),
    ("qa1", "kitchen", "", "Where is Mary?", False),
    ("qa3", "office", "Before the kitchen the apple was in the office.",
     "Where was the apple before the kitchen?", True),
    ("qa3", "office", "the kitchen", "Where was the apple before the kitchen?", False),
    ("qa5", "Fred", "fred", "Who did Mary give the apple to?", True),
    ("qa5", "apple", "Mary gave the apple", "What did Mary give to Fred?", True),
    ("qa6", "yes", "Answer: yes", "Is John in the garden?", True),
    ("qa7", "none", "none of them", "How many objects is Mary carrying?", False),
    ("qa8", "apple,football", "football and apple", "What is Mary carrying?", True),
    ("qa8", "apple,football", "apple", "What is Mary carrying?", False),
    ("qa8", "apple,football", "apple, football, milk", "What is Mary carrying?", False),
    ("qa10", "no", "no, maybe", "Is Bill in the park?", False),
    ("qa14", "park", "park\nquestion: where was julie before the school?",
     "Where was Julie before the bedroom?", False),
    ("qa16", "white", "White.", "What color is Brian?", True),
    ("qa19", "n,w", "n,w", "How do you go from the kitchen to the hallway?", True),
    ("qa19", "s,e", "s, e", "How do you go from the kitchen to the garden?", False),
    ("qa20", "kitchen", "kitchen", "Where will antoine go?", True),
]


def official_rows(task: str) -> list[dict[str, str]]:
    return [{"input": f"{HAYSTACK * 3}Fact {i}. {HAYSTACK}", "question": question,
             "target": target}
            for i, (t, target, _, question, _) in enumerate(KNOWN_OUTPUTS) if t == task]


def write_layouts(root: Path) -> None:
    """One length per layout: save_to_disk (1k), Hub files (0k), training files (2k)."""
    datasets.DatasetDict({task: datasets.Dataset.from_list(official_rows(task))
                          for task in ("qa1", "qa3")}).save_to_disk(root / "1k")
    (root / "0k").mkdir(parents=True)
    for task in ("qa1", "qa8"):
        pq.write_table(pa.Table.from_pylist(official_rows(task)),
                       root / "0k" / f"{task}-00000-of-00001.parquet")
    (root / "data" / "qa19").mkdir(parents=True)
    (root / "data" / "qa19" / "2k.json").write_text(json.dumps(official_rows("qa19")))


def test_official_prompt_text() -> None:
    text, span = babilong_prompt("  Mary went to the garden. \n", "Where is Mary?", "qa1")
    assert text.startswith("I will give you context with the facts about positions of different "
                           "persons hidden in some random text and a question. You need")
    assert text.endswith("The most recent location of ’person’ is ’location’. Do not write "
                         "anything else after that.\n\n<context>\nMary went to the garden.\n"
                         "</context>\n\nQuestion: Where is Mary?")
    assert text[span[0]:span[1]] == "Mary went to the garden."
    # No task: the official run without instruction, examples and post-prompt.
    bare, _ = babilong_prompt("Mary went to the garden.", "Where is Mary?", None)
    assert bare == "<context>\nMary went to the garden.\n</context>\n\nQuestion: Where is Mary?"


def test_prompt_table_is_the_official_text() -> None:
    # sha256 of json.dumps(DEFAULT_PROMPTS, sort_keys=True) of babilong/prompts.py @ 7a6efee.
    digest = hashlib.sha256(json.dumps(BABILONG_PROMPTS, sort_keys=True).encode()).hexdigest()
    assert digest == "e8132b458b71b41d40aea99579e55f073da1ff414f845645c48d1f6ae03b6f55"


@pytest.mark.parametrize("task, length", [("qa1", "1k"), ("qa8", "0k"), ("qa19", "2k")])
def test_every_layout_reads_with_the_official_prompt(tokenizer, tmp_path: Path, task,
                                                     length) -> None:
    write_layouts(tmp_path / "babilong")
    ds = babilong_official_dataset(tmp_path / "babilong", task, length, tokenizer,
                                   cache_dir=tmp_path / "cache")
    rows = official_rows(task)
    assert list(ds["answer"]) == [r["target"] for r in rows]
    assert set(ds["task"]) == {task}
    for row, source in zip(ds, rows, strict=True):
        prompt = tokenizer.decode(row["input_ids"][:row["prompt_length"]])
        assert prompt == babilong_prompt(source["input"], source["question"], task)[0]


def test_layout_listing_and_missing_data(tmp_path: Path) -> None:
    write_layouts(tmp_path / "babilong")
    assert babilong_layout(tmp_path / "babilong") == {
        "0k": ["qa1", "qa8"], "1k": ["qa1", "qa3"], "2k": ["qa19"]}
    with pytest.raises(DataError, match=r"no BABILong data for qa2 at 4k; it has 0k: qa1,qa8; "
                                        r"1k: qa1,qa3; 2k: qa19"):
        babilong_official_dataset(tmp_path / "babilong", "qa2", "4k", tokenizer=None)
    with pytest.raises(DataError, match="unknown bAbI task 'qa21'"):
        babilong_official_dataset(tmp_path / "babilong", "qa21", "0k", tokenizer=None)


def test_hub_cache_snapshot_by_name(tokenizer, tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "datasets--RMT-team--babilong"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    write_layouts(repo / "snapshots" / "0123abc")
    ds = babilong_official_dataset("RMT-team/babilong", "qa8", "0k", tokenizer,
                                   cache_dir=tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert list(ds["answer"]) == [r["target"] for r in official_rows("qa8")]


def test_misnamed_official_field(tokenizer, tmp_path: Path) -> None:
    (tmp_path / "b" / "0k").mkdir(parents=True)
    rows = [{"context": "x", "question": "Where is Mary?", "target": "kitchen"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b" / "0k" / "qa1.parquet")
    with pytest.raises(DataError, match=r"qa1\.parquet:1: no field 'input' \(fields: 'context', "):
        babilong_official_dataset(tmp_path / "b", "qa1", "0k", tokenizer, cache_dir=tmp_path / "c")


def test_fixture_scored_like_the_official_scorer(tokenizer, tmp_path: Path) -> None:
    """Known outputs on rows read from the official layout get the official scores."""
    write_layouts(tmp_path / "babilong")
    checked = 0
    for task, length in (("qa1", "1k"), ("qa3", "1k"), ("qa8", "0k"), ("qa19", "2k")):
        ds = babilong_official_dataset(tmp_path / "babilong", task, length, tokenizer,
                                       cache_dir=tmp_path / "cache")
        cases = [case for case in KNOWN_OUTPUTS if case[0] == task]  # the rows' order
        for row, (_, target, output, question, official) in zip(ds, cases, strict=True):
            assert (row["answer"], row["question"]) == (target, question)
            labels = BABILONG_TASK_LABELS[row["task"]]
            assert compare_answers(row["answer"], output, row["question"], labels) is official
            checked += 1
    assert checked == 15


@pytest.mark.parametrize("task, target, output, question, official", KNOWN_OUTPUTS)
def test_known_outputs_score_as_officially(task, target, output, question, official) -> None:
    assert compare_answers(target, output, question, BABILONG_TASK_LABELS[task]) is official
