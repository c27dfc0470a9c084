"""Parse bAbI task files into one sample per question, and split them by story.

The bAbI format (Weston et al. 2015, see ``babi/README.txt`` of the dataset)::

    1 Mary moved to the bathroom.
    2 John went to the hallway.
    3 Where is Mary? \tbathroom\t1
    1 Sandra travelled to the office.      <- ids restart at 1: a new story

Statement lines are ``ID text``; question lines are ``ID question<TAB>answer<TAB>supporting ids``
(a space may precede the first tab). Following the bAbI convention, the context of a question is
every statement line of its story before it; earlier questions are not part of the context.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rmt_scale.data.text import read_utf8
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")

_LINE_RE = re.compile(r"(\S+) (.*)")


@dataclass(frozen=True)
class BabiSample:
    """One bAbI question with the story facts that precede it.

    Attributes:
        task: Task name, ``"qa1"`` .. ``"qa20"``.
        story: Index of the story in its file (0-based); samples with the same ``story`` share facts
            and must stay in the same split.
        facts: The statement sentences of the story before the question, in order.
        question: The question sentence, e.g. ``"Where is Mary?"``.
        answer: The answer, e.g. ``"bathroom"`` (some tasks have ``"n,w"`` or ``"apple,milk"``).
        supporting_ids: The bAbI line ids of the supporting facts, in file order.
        supporting_facts: The same facts as indices into ``facts``.
    """

    task: str
    story: int
    facts: tuple[str, ...]
    question: str
    answer: str
    supporting_ids: tuple[int, ...]
    supporting_facts: tuple[int, ...]


def task_number(task: str) -> int:
    """Return N for a task name ``"qaN"`` (1..20).

    Raises:
        DataError: If ``task`` is not ``qa1`` .. ``qa20``.
    """
    match = re.fullmatch(r"qa(\d+)", task)
    if match is None or not 1 <= int(match.group(1)) <= 20:
        raise DataError(f"unknown bAbI task {task!r}: expected 'qa1' .. 'qa20'")
    return int(match.group(1))


def _line_error(source: str, lineno: int, line: str, reason: str) -> DataError:
    return DataError(f"{source}:{lineno}: {reason}: {line[:80]!r}")


def parse_babi_lines(lines: Iterable[str], source: str, task: str) -> list[BabiSample]:
    """Parse bAbI-format lines (without their newlines) into samples.

    Args:
        lines: The lines of one file, newline characters removed.
        source: Name used in error messages (usually the file path).
        task: Task name stored in every sample.

    Returns:
        One sample per question line, in file order.

    Raises:
        DataError: On the first malformed line, naming ``source`` and the line number.
    """
    samples: list[BabiSample] = []
    story = -1
    prev_id = 0
    # line id -> index into `facts` for statements, None for question lines.
    fact_index: dict[int, int | None] = {}
    facts: list[str] = []
    last_was_question = False
    lineno = 0
    for lineno, line in enumerate(lines, start=1):
        fail = functools.partial(_line_error, source, lineno, line)
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise fail("expected 'ID text'")
        raw_id, text = match.groups()
        if not raw_id.isdigit():
            raise fail(f"line id {raw_id!r} is not a number")
        line_id = int(raw_id)
        if line_id == 1:
            story += 1
            fact_index, facts = {}, []
        elif line_id != prev_id + 1:
            expected = "1" if prev_id == 0 else f"{prev_id + 1} (or 1 for a new story)"
            raise fail(f"line id {line_id} does not follow {prev_id}: expected {expected}")
        prev_id = line_id

        if "\t" not in text:
            if not text.strip():
                raise fail("empty statement")
            fact_index[line_id] = len(facts)
            facts.append(text.strip())
            last_was_question = False
            continue

        fields = text.split("\t")
        if len(fields) != 3:
            raise fail(f"question line has {len(fields)} tab-separated fields, expected 3 "
                       "(question, answer, supporting ids)")
        question, answer, support = (field.strip() for field in fields)
        if not question or not answer:
            raise fail("empty question or answer")
        support_tokens = support.split()
        if not support_tokens or not all(token.isdigit() for token in support_tokens):
            raise fail(f"supporting ids {support!r} are not space-separated numbers")
        supporting_ids = tuple(int(token) for token in support_tokens)
        for sid in supporting_ids:
            if not 1 <= sid < line_id:
                raise fail(f"supporting id {sid} is not a line before question id {line_id}")
            if fact_index.get(sid) is None:
                raise fail(f"supporting id {sid} is a question, not a statement")
        samples.append(BabiSample(
            task=task,
            story=story,
            facts=tuple(facts),
            question=question,
            answer=answer,
            supporting_ids=supporting_ids,
            supporting_facts=tuple(fact_index[sid] for sid in supporting_ids),
        ))
        fact_index[line_id] = None
        last_was_question = True

    if lineno == 0:
        raise DataError(f"{source}:1: empty file, no bAbI lines")
    if not last_was_question:
        # Every story of every bAbI file ends with a question; statements at the end of the file
        # mean it was cut short.
        raise DataError(f"{source}:{lineno}: file ends with a statement, not a question "
                        "(truncated file?)")
    return samples


def parse_babi_file(path: str | Path, task: str | None = None) -> list[BabiSample]:
    """Read and parse one bAbI file.

    Args:
        path: A bAbI-format text file (UTF-8, LF or CRLF line endings).
        task: Task name for the samples; by default taken from the file name (``qa3_...``).

    Raises:
        DataError: If the file is unreadable as UTF-8, has no trailing newline (a truncated last
            line), or has a malformed line.
    """
    path = Path(path)
    if task is None:
        match = re.match(r"(qa\d+)_", path.name)
        if match is None:
            raise DataError(f"{path}: cannot tell the task from the file name; pass task='qaN'")
        task = match.group(1)
    text = read_utf8(path)
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if text and not text.endswith("\n"):
        # bAbI files end with a newline; a missing one means the last line may be cut short.
        raise DataError(f"{path}:{text.count(chr(10)) + 1}: last line has no newline "
                        "(truncated file?)")
    lines = text.split("\n")[:-1] if text else []
    return parse_babi_lines(lines, source=str(path), task=task)


def split_by_story(
    samples: Sequence[BabiSample], valid_fraction: float = 0.1, seed: int = 0
) -> tuple[list[BabiSample], list[BabiSample]]:
    """Split samples into train and validation by held-out stories.

    All questions of a story land in the same split, so no validation question shares facts with a
    training one. The split depends only on the set of story indices and ``seed``.

    Args:
        samples: Samples of one task file.
        valid_fraction: Fraction of stories held out (at least one story when > 0).
        seed: Seed of the shuffle that picks the held-out stories.

    Returns:
        ``(train, validation)``, each in the original order.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    stories = sorted({sample.story for sample in samples})
    random.Random(seed).shuffle(stories)
    num_valid = max(1, round(valid_fraction * len(stories))) if valid_fraction > 0 else 0
    held_out = set(stories[:num_valid])
    train = [s for s in samples if s.story not in held_out]
    valid = [s for s in samples if s.story in held_out]
    return train, valid


def find_task_file(task: str, babi_dir: str | Path, split: str) -> Path | None:
    """Return the file ``qa{N}_*_{split}.txt`` (or ``qa{N}_{split}.txt``) in ``babi_dir``, if any.

    Raises:
        DataError: If several files match.
    """
    number = task_number(task)
    pattern = re.compile(rf"qa{number}_(?:.*_)?{re.escape(split)}\.txt")
    matches = sorted(p for p in Path(babi_dir).iterdir() if pattern.fullmatch(p.name))
    if len(matches) > 1:
        raise DataError(f"{babi_dir}: several files for {task} {split}: "
                        + ", ".join(p.name for p in matches))
    return matches[0] if matches else None


def load_babi_dir(
    task: str,
    babi_dir: str | Path,
    split: str = "train",
    valid_fraction: float = 0.1,
    split_seed: int = 0,
) -> list[BabiSample]:
    """Load one split of a bAbI task from a directory of bAbI-format files.

    ``test`` reads ``qa{N}_*_test.txt``. ``train`` and ``validation`` read ``qa{N}_*_valid.txt``
    when it exists (as in bAbI's ``en-valid``); otherwise they are the two parts of
    ``qa{N}_*_train.txt`` from :func:`split_by_story`, so validation stories are never trained on.

    Args:
        task: ``"qa1"`` .. ``"qa20"``.
        babi_dir: Directory such as ``.../tasks_1-20_v1-2/en``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        valid_fraction: Fraction of training stories held out for validation.
        split_seed: Seed of the held-out story choice; keep it fixed across runs.

    Raises:
        DataError: If the directory or the needed file is missing, or a file is malformed.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    babi_dir = Path(babi_dir)
    if not babi_dir.is_dir():
        raise DataError(f"{babi_dir}: not a directory of bAbI files")
    number = task_number(task)

    def require(name: str) -> Path:
        path = find_task_file(task, babi_dir, name)
        if path is None:
            raise DataError(f"{babi_dir}: no file qa{number}_*_{name}.txt for {task} {split}")
        return path

    if split == "test":
        return parse_babi_file(require("test"), task)
    valid_path = find_task_file(task, babi_dir, "valid")
    if valid_path is not None:
        return parse_babi_file(require("train") if split == "train" else valid_path, task)
    train, valid = split_by_story(parse_babi_file(require("train"), task), valid_fraction,
                                  split_seed)
    logger.debug("%s: %d train / %d validation questions by held-out stories",
                 task, len(train), len(valid))
    return train if split == "train" else valid


def format_babi_lines(
    stories: Iterable[Sequence[tuple[str, str, Sequence[int]] | str]],
) -> list[str]:
    """Write stories in the bAbI line format (the inverse of :func:`parse_babi_lines`).

    Args:
        stories: Each story is a list of items: a statement string, or a question tuple
            ``(question, answer, supporting line ids)``.

    Returns:
        Lines without newlines, ids restarting at 1 for each story.
    """
    lines: list[str] = []
    for story in stories:
        for line_id, item in enumerate(story, start=1):
            if isinstance(item, str):
                lines.append(f"{line_id} {item}")
            else:
                question, answer, support = item
                lines.append(f"{line_id} {question} \t{answer}\t{' '.join(map(str, support))}")
    return lines
