"""The official BABILong data (``RMT-team/babilong``, ``RMT-team/babilong-1k-samples``,
``RMT-team/babilong-train-5k-samples``) read offline, with the official prompt.

Rows have the fields ``input`` (the haystack with the facts), ``question`` and ``target``; there is
one dataset config per length (``"0k"``, ``"1k"``, ``"4k"`` ...) and one split per task (``"qa1"``
...). A source is a directory in one of the layouts a user ends up with, checked in this order:

1. ``ROOT/<length>/`` written by ``save_to_disk`` (``load_dataset(name, "4k").save_to_disk(
   "ROOT/4k")``): a DatasetDict with one split per task;
2. ``ROOT/<length>/<task>[-*].{parquet,jsonl,json}``: the Hub files of ``RMT-team/babilong`` and
   ``babilong-1k-samples`` (``4k/qa1-00000-of-00001.parquet``), e.g. from ``huggingface-cli
   download --repo-type dataset``;
3. ``ROOT/[data/]<task>/<length>.{json,jsonl,parquet}``: the files of
   ``babilong-train-5k-samples`` (``data/qa1/4k.json``);

or a dataset name: its snapshot in the local Hub cache (layouts 2 and 3), else the prepared
``datasets`` cache of ``load_dataset(name, length, split=task)``, offline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rmt_scale.data.babi import task_number
from rmt_scale.data.qa import qa_dataset
from rmt_scale.data.sources import (
    TABLE_SUFFIXES,
    Source,
    hub_snapshot,
    is_saved_dataset,
    resolve_sources,
)
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

OFFICIAL_FIELDS = {"context": "input", "question": "question", "answer": "target"}
"""Field mapping of the official rows onto :func:`rmt_scale.data.qa_dataset`'s names."""


def _data_files(directory: Path, stem: str) -> list[Path]:
    """Files ``stem.ext`` or ``stem-*.ext`` in ``directory`` with a table suffix, sorted."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                  and (p.stem == stem or p.name.startswith(f"{stem}-")))


def find_babilong_sources(root: str | Path, task: str, length: str) -> list[Source]:
    """The sources holding ``task`` at ``length`` under a local directory (see the layouts above).

    Raises:
        DataError: If ``root`` is not a directory, or no layout has this task and length (the
            message lists what the directory has).
    """
    task_number(task)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory of BABILong data")
    by_length = root / length
    if is_saved_dataset(by_length):
        return [Source("saved", str(by_length), split=task)]
    for files in (_data_files(by_length, task), _data_files(root / "data" / task, length),
                  _data_files(root / task, length)):
        if files:
            return resolve_sources(files)
    have = babilong_layout(root)
    listing = "; ".join(f"{n}: {','.join(t)}" for n, t in have.items()) or "nothing it recognises"
    raise DataError(f"{root}: no BABILong data for {task} at {length}; it has {listing}")


def babilong_layout(root: str | Path) -> dict[str, list[str]]:
    """The (length -> tasks) a local directory holds, for listings and error messages."""
    root = Path(root)
    found: dict[str, set[str]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if is_saved_dataset(sub) and (sub / "dataset_dict.json").is_file():
            splits = json.loads((sub / "dataset_dict.json").read_text()).get("splits", [])
            found.setdefault(sub.name, set()).update(splits)
            continue
        for path in sub.iterdir():
            if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
                stem = path.stem.split("-")[0]
                if stem.startswith("qa"):  # layout 2: <length>/<task>
                    found.setdefault(sub.name, set()).add(stem)
                elif sub.name.startswith("qa"):  # layout 3: <task>/<length>
                    found.setdefault(stem, set()).add(sub.name)
    if (root / "data").is_dir():
        for length, tasks in babilong_layout(root / "data").items():
            found.setdefault(length, set()).update(tasks)

    def order(task: str) -> int:
        return int(task[2:]) if task[2:].isdigit() else 0

    return {length: sorted(tasks, key=order) for length, tasks in sorted(found.items())}


def babilong_sources(
    source: str | Path, task: str, length: str, hub_cache: str | Path | None = None
) -> list[Source]:
    """The sources of ``task`` at ``length`` from a local directory or a dataset name (offline).

    Raises:
        DataError: If nothing local has them (see :func:`find_babilong_sources`).
    """
    path = Path(source).expanduser()
    if path.exists():
        return find_babilong_sources(path, task, length)
    snapshot = hub_snapshot(str(source), hub_cache)
    if snapshot is not None:
        logger.info("%s: reading the local Hub cache %s", source, snapshot)
        return find_babilong_sources(snapshot, task, length)
    task_number(task)
    return [Source("cached", str(source), length, task)]


def babilong_official_dataset(
    source: str | Path,
    task: str,
    length: str,
    tokenizer: Any,
    *,
    template: str = "babilong",
    cache_dir: str | Path | None = None,
    hub_cache: str | Path | None = None,
) -> Any:
    """A tokenised :func:`rmt_scale.data.qa_dataset` of official BABILong rows.

    Args:
        source: A local directory (see the module docstring) or a dataset name in the local cache,
            e.g. ``"RMT-team/babilong"``.
        task: ``"qa1"`` .. ``"qa20"``.
        length: The config, e.g. ``"0k"``, ``"4k"``, ``"128k"``.
        tokenizer: The model's Hugging Face tokenizer.
        template: ``"babilong"`` (the official prompt, the default), ``"chat"`` (the official
            prompt as the user turn) or ``"plain"``.
        cache_dir: Where ``datasets`` keeps the Arrow files.
        hub_cache: The Hugging Face Hub cache; default: ``$HF_HUB_CACHE`` or its default.

    Raises:
        DataError: For missing data or rows without ``input``/``question``/``target``.
    """
    sources = babilong_sources(source, task, length, hub_cache)
    return qa_dataset(sources, tokenizer, fields=OFFICIAL_FIELDS, template=template, task=task,
                      cache_dir=cache_dir)
