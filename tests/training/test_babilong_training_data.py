"""data.babilong.facts_before_last_segment: no fact shares the last segment with the question."""

from __future__ import annotations

import re

import pytest

from rmt_scale.data import generate_babi
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
