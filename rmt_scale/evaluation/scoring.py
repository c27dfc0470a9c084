"""The BABILong scoring rule: is the expected label the only candidate label the answer names?

Following Kuratov et al. (2024) (`babilong/metrics.py`), so that scores compare with the published
ones: the model output is lower-cased and cut to its first sentence (up to the first "."), and
before any sign that the model went on to write another example ("<context>", "<example>"). Every
candidate label of the task found in that text (as a substring) counts as named, except labels
that the question itself mentions ("Where was the apple before the kitchen?" never has "kitchen"
as its answer). The answer is correct when the expected label is the only one left; a comma-joined
answer longer than 3 characters (task 8's "apple,football") needs exactly its parts named, while
task 19's paths ("n,w") are whole labels.

BABILong's code also splits on "Question", but after lower-casing, so that split never happens:
"kitchen\\nQuestion: Where is the garden?" names two labels and is wrong. It is kept that way
here, because published scores were computed so (a test checks known outputs against the official
function's results). The one difference: the expected answer is stripped of surrounding spaces.

Free-form answers (`rmt-scale eval --data` on your own QA rows) are scored two ways instead:
exact match of the output's first line and whether the output contains the answer, both after
SQuAD's normalisation.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

# The candidate labels of the 20 bAbI tasks, as in BABILong (`TASK_LABELS` of babilong/metrics.py).
BABILONG_TASK_LABELS: dict[str, tuple[str, ...]] = {
    "qa1": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa2": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa3": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa4": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa5": ("Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"),
    "qa6": ("no", "yes"),
    "qa7": ("none", "one", "three", "two"),
    "qa8": ("apple", "football", "milk", "nothing"),
    "qa9": ("no", "yes"),
    "qa10": ("maybe", "no", "yes"),
    "qa11": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa12": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa13": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa14": ("bedroom", "cinema", "kitchen", "office", "park", "school"),
    "qa15": ("cat", "mouse", "sheep", "wolf"),
    "qa16": ("gray", "green", "white", "yellow"),
    "qa17": ("no", "yes"),
    "qa18": ("no", "yes"),
    "qa19": ("e,e", "e,n", "e,s", "n,e", "n,n", "n,w", "s,e", "s,s", "s,w", "w,n", "w,s", "w,w"),
    "qa20": ("bedroom", "bored", "garden", "hungry", "kitchen", "thirsty", "tired"),
}

# Where the first "sentence" of an output ends: BABILong's markers of a model writing on. Not
# "question": BABILong's split on "Question" comes after lower-casing and never cuts.
_CUT_MARKERS = (".", "<context>", "<example>")


def first_sentence(output: str) -> str:
    """The part of a model output that is scored: lower-cased, up to the first cut marker."""
    text = output.lower()
    for marker in _CUT_MARKERS:
        text = text.split(marker, 1)[0]
    return text


def candidate_labels(task: str, answers: Iterable[str] = ()) -> list[str]:
    """The labels a `task`'s answers are chosen from, lower-cased and sorted.

    BABILong's fixed list for the task, plus every answer in `answers` (pass all the task's data,
    e.g. from :func:`rmt_scale.data.task_labels`, so that custom data has its labels too). A
    comma-joined answer that is not a label itself adds its parts.
    """
    labels = {label.lower() for label in BABILONG_TASK_LABELS.get(task, ())}
    for answer in answers:
        answer = answer.strip().lower()
        if answer in labels or "," not in answer:
            labels.add(answer)
        else:
            labels.update(part.strip() for part in answer.split(",") if part.strip())
    return sorted(labels)


def compare_answers(target: str, output: str, question: str, labels: Iterable[str]) -> bool:
    """BABILong's rule: True when `target` is the only label of `labels` named by `output`.

    Args:
        target: The expected answer ("kitchen"; "apple,football" for a list).
        output: The generated text (new tokens only, decoded).
        question: The sample's question; labels it mentions are ignored in the output.
        labels: The task's candidate labels (see :func:`candidate_labels`).
    """
    text = first_sentence(output)
    target = target.strip().lower()
    labels = {label.lower() for label in labels}
    in_question = {label for label in labels if label in question.lower()}
    named = {label for label in labels if label in text} - in_question
    if "," in target and len(target) > 3:  # BABILong's test for a list answer
        parts = target.split(",")
        return all(part in named for part in parts) and len(named) == len(parts)
    return named == {target}


# --- free-form answers (the user's own QA data) ---------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: SQuAD's normalisation,
    so that "The kitchen." and "kitchen" are the same answer."""
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def first_line(output: str) -> str:
    """The first non-empty line of an output: what an answer is, before a model writes on."""
    return next((line for line in output.splitlines() if line.strip()), "")


def exact_match(target: str, output: str) -> bool:
    """The output's first line is the target, once both are normalised."""
    return normalize_answer(first_line(output)) == normalize_answer(target)


def contains_answer(target: str, output: str) -> bool:
    """The normalised target appears in the normalised output as whole words."""
    wanted = normalize_answer(target)
    return bool(wanted) and f" {wanted} " in f" {normalize_answer(output)} "
