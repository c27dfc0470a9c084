"""data.babilong.facts_before_last_segment: no fact shares the last segment with the question."""

from __future__ import annotations

import re

import pytest

from rmt_scale.data import generate_babi
from rmt_scale.errors import ConfigError
from rmt_scale.training.config import load_train_config
from rmt_scale.training.data import build_dataset
from tests.bpe import byte_level_bpe
from tests.training.helpers import TINY

SEGMENT = 48
PERSON = re.compile(r"\b(Mary|John|Daniel|Sandra)\b")


@pytest.fixture(scope="module")
def tokenizer():
    lines = [" ".join(s.facts) + f" {s.question} {s.answer}" for s in generate_babi("qa1", 50, seed=0)]
    lines.append("The fox ran quickly across the pale meadow. Distant bells rang over the hills.")
    return byte_level_bpe(lines, 400, pad_token="<pad>", eos_token="<eos>")


def samples_with_a_fact_in_the_last_segment(gap: bool, tokenizer, num_segments: int) -> tuple[int, int]:
    config = load_train_config(TINY, ["data.kind=babilong", "data.num_samples=60",
                                      f"rmt.segment_size={SEGMENT}",
                                      f"data.babilong.facts_before_last_segment={str(gap).lower()}"])
    rows = build_dataset(config, num_segments, "train", len(tokenizer), tokenizer=tokenizer)
    hits = 0
    for row in rows:
        last = tokenizer.decode(row["input_ids"][-SEGMENT:])
        hits += bool(PERSON.search(last.split("Question:")[0]))
    return hits, len(rows)


def test_facts_before_last_segment(tokenizer):
    hits, total = samples_with_a_fact_in_the_last_segment(True, tokenizer, num_segments=4)
    assert total == 60 and hits == 0
    # The check can see facts: without the option many samples have one in the last segment.
    hits, _ = samples_with_a_fact_in_the_last_segment(False, tokenizer, num_segments=4)
    assert hits > 10


QUESTION = re.compile(r"Question: Where is (\w+)\?\nAnswer: (\w+)")
MOVE = re.compile(r"(Mary|John|Daniel|Sandra) (?:went back|moved|went|journeyed|travelled) to the (\w+)\.")


def test_ask_every_person_asks_where_everyone_is_with_a_loss_on_each_answer(tokenizer):
    config = load_train_config(TINY, ["data.kind=babilong", "data.num_samples=40",
                                      f"rmt.segment_size={SEGMENT}",
                                      "data.babilong.facts_before_last_segment=true",
                                      "data.babilong.ask_every_person=true"])
    rows = build_dataset(config, 4, "train", len(tokenizer), tokenizer=tokenizer)
    several = 0
    for row in rows:
        assert len(row["input_ids"]) <= 4 * SEGMENT
        text = tokenizer.decode(row["input_ids"])
        context = text.split("\nQuestion:")[0]
        places = dict(MOVE.findall(context))
        asked = QUESTION.findall(text)
        # Every person the story moves is asked about once, with their latest place.
        assert sorted(person for person, _ in asked) == sorted(places)
        assert all(places[person] == place for person, place in asked)
        labelled = tokenizer.decode([t for t in row["labels"] if t != -100])
        assert labelled == "".join(f" {place}" for _, place in asked) + "<eos>"
        assert not PERSON.search(tokenizer.decode(row["input_ids"][-SEGMENT:]).split("Question:")[0])
        several += len(asked) > 1
    assert several > 20


def test_ask_every_person_is_for_qa1():
    with pytest.raises(ConfigError, match="ask_every_person is for task qa1, not qa2"):
        load_train_config(TINY, ["data.kind=babilong", "data.babilong.task=qa2",
                                 "data.babilong.ask_every_person=true"])
