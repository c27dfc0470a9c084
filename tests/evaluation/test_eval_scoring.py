"""The BABILong scoring rule on hand-written outputs."""

from __future__ import annotations

import pytest

from rmt_scale.evaluation import (
    BABILONG_TASK_LABELS,
    candidate_labels,
    compare_answers,
    first_sentence,
)

ROOMS = BABILONG_TASK_LABELS["qa1"]


@pytest.mark.parametrize("output, correct", [
    (" kitchen", True),
    (" The kitchen.", True),
    ("Mary is in the kitchen. She went to the garden before.", True),  # later sentences ignored
    ("I do not know. Mary is in the kitchen.", False),                 # label only after sentence 1
    (" kitchen or garden", False),                                      # two labels: wrong
    (" garden", False),
    ("", False),
    (" KITCHEN", True),                                                 # case-insensitive
    (" Kitchen\nQuestion: Where is the garden?", False),  # BABILong never cuts at "Question"
    (" kitchen <example> the garden", True),
])
def test_first_sentence_must_name_only_the_answer(output, correct):
    assert compare_answers("kitchen", output, "Where is Mary?", ROOMS) is correct


def test_labels_in_the_question_are_not_counted():
    question = "Where was the apple before the kitchen?"
    assert compare_answers("office", " It was in the kitchen, then the office.", question, ROOMS)
    assert not compare_answers("office", " the kitchen", question, ROOMS)
    assert not compare_answers("office", " hallway, office", question, ROOMS)


def test_case_of_target_labels_and_question_does_not_matter():
    labels = BABILONG_TASK_LABELS["qa5"]  # capitalised names, as in BABILong
    assert compare_answers("Fred", " fred gave it.", "Who gave the milk to Jeff?", labels)
    assert compare_answers("fred", " FRED", "WHO GAVE THE MILK TO JEFF?", labels)
    assert not compare_answers("Fred", " Fred and Bill", "Who gave the milk to Jeff?", labels)
    assert compare_answers("Kitchen", " kitchen", "Where is Mary?", [label.upper() for label in ROOMS])


def test_list_answers_need_every_part_and_nothing_else():
    labels = candidate_labels("qa8", ["apple,football", "milk", "nothing"])
    assert compare_answers("apple,football", " football and apple", "What is Mary carrying?", labels)
    assert not compare_answers("apple,football", " apple", "What is Mary carrying?", labels)
    assert not compare_answers("apple,football", " apple, football, milk", "What is Mary carrying?", labels)


def test_path_answers_are_whole_labels():
    labels = BABILONG_TASK_LABELS["qa19"]
    question = "How do you go from the kitchen to the garden?"
    assert compare_answers("n,w", " n,w", question, labels)
    assert not compare_answers("n,w", " s,e", question, labels)


def test_candidate_labels_add_data_answers_and_split_lists():
    assert candidate_labels("qa1") == sorted(ROOMS)
    assert candidate_labels("qa1", ["Cellar"]) == sorted([*ROOMS, "cellar"])
    assert candidate_labels("qa8", ["apple,milk"]) == ["apple", "football", "milk", "nothing"]
    assert candidate_labels("qa19", ["n,w"]) == sorted(BABILONG_TASK_LABELS["qa19"])


def test_first_sentence():
    assert first_sentence(" The Kitchen. The garden") == " the kitchen"
    assert first_sentence("garden\nQuestion: x") == "garden\nquestion: x"
