"""Fallback: bAbI stories from a dataset in the ``babi_qa`` schema instead of bAbI text files.

The schema is that of ``facebook/babi_qa`` (configs such as ``en-qa1``): one row per story with a
``story`` column holding, per line, ``id``, ``type`` (0 statement, 1 question), ``text``,
``supporting_ids`` and ``answer``. ``story`` comes either as parallel lists (``datasets``'
``Sequence`` of a dict, as the dataset script wrote it) or as a list of line objects (``List`` of
a struct, as parquet exports and ``datasets`` >= 4 write it); both are read. Rows are written back
as bAbI lines and go through the same parser, so results and checks match local files.

Where rows come from, in order: a local directory (``save_to_disk`` output, or data files such as
a parquet export ``en-qa1/train/0000.parquet``; the config sub-folder is used when present); the
dataset's snapshot in the local Hub cache; ``datasets.load_dataset`` (network or its cache).
``facebook/babi_qa`` itself is a dataset *script*, which ``datasets`` >= 4 refuses to run: that,
and every other loading failure, is a one-line DataError that says what to pass instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rmt_scale.data.babi import BabiSample, parse_babi_lines, task_number
from rmt_scale.data.sources import Row, Source, directory_sources, hub_snapshot, read_rows
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

_STORY_KEYS = ("id", "type", "text", "supporting_ids", "answer")
_QUESTION_TYPES = (1, "1", "question")


def _lines_of(row: Row) -> Iterator[dict[str, Any]]:
    """The story lines of a row, whichever of the two ``story`` shapes it has."""
    story = row.get("story", (dict, list))
    if isinstance(story, dict):
        missing = [key for key in _STORY_KEYS if key not in story]
        if missing:
            raise DataError(f"{row.location}: 'story' lacks {missing} (babi_qa schema)")
        columns = [story[key] for key in _STORY_KEYS]
        if len({len(column) for column in columns}) != 1:
            raise DataError(f"{row.location}: the lists of 'story' differ in length")
        for values in zip(*columns):
            yield dict(zip(_STORY_KEYS, values))
        return
    for line in story:
        if not isinstance(line, dict) or any(key not in line for key in _STORY_KEYS):
            raise DataError(f"{row.location}: each 'story' line needs {list(_STORY_KEYS)}")
        yield line


def babi_qa_lines(rows: Iterable[Row]) -> list[str]:
    """bAbI-format lines of rows in the ``babi_qa`` schema."""
    lines = []
    for row in rows:
        for line in _lines_of(row):
            support = " ".join(map(str, line["supporting_ids"] or []))
            if line["type"] in _QUESTION_TYPES:
                lines.append(f"{line['id']} {line['text']}\t{line['answer']}\t{support}")
            else:
                lines.append(f"{line['id']} {line['text']}")
    return lines


def _rows_from_datasets(name: str, config: str, split: str) -> Iterator[Row]:
    import datasets  # deferred: only this fallback may reach the Hub

    source = f"{name}[{config}/{split}]"
    try:
        loaded = datasets.load_dataset(name, config, split=split)
    except RuntimeError as err:  # datasets >= 4: "Dataset scripts are no longer supported"
        raise DataError(f"{source}: {str(err).splitlines()[0]}; pass babi_dir with the bAbI text "
                        "files, or a local directory of the dataset's parquet export") from None
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{source}: cannot load ({reason})") from None
    for index, values in enumerate(loaded, start=1):
        yield Row(f"{source}:{index}", values)


def load_babi_hub(
    task: str, name: str, split: str = "train", config: str | None = None,
    hub_cache: str | Path | None = None,
) -> list[BabiSample]:
    """Load a bAbI task split from a dataset in the ``babi_qa`` schema.

    Args:
        task: ``"qa1"`` .. ``"qa20"``.
        name: A local directory (see the module docstring) or a Hub dataset name, e.g.
            ``"facebook/babi_qa"``.
        split: ``"train"``, ``"validation"`` or ``"test"``; the dataset must have it.
        config: Dataset config (and sub-folder of a local export); default ``"en-qa{N}"``.
        hub_cache: The Hugging Face Hub cache; default: ``$HF_HUB_CACHE`` or its default.

    Raises:
        DataError: If the dataset cannot be loaded, lacks the split or the ``story`` column, or a
            story is malformed; one line, naming the row.
    """
    config = config or f"en-qa{task_number(task)}"
    where = f"{name}[{config}/{split}]"
    path = Path(name).expanduser()
    root = path if path.is_dir() else hub_snapshot(name, hub_cache)
    rows: Iterable[Row | Mapping[str, Any]]
    if root is not None:
        sources: list[Source] = directory_sources(root, config, split)
        if not sources:
            raise DataError(f"{where}: no data files for this config and split in {root}")
        rows = read_rows(sources)
    elif path.exists():
        raise DataError(f"{name}: expected a directory in the babi_qa schema, not a file")
    else:
        logger.info("loading bAbI %s from the Hugging Face dataset %s", task, where)
        rows = _rows_from_datasets(name, config, split)
    return parse_babi_lines(babi_qa_lines(rows), source=where, task=task)
