"""Fallback: load bAbI stories from a Hugging Face Hub dataset instead of local files.

Only used when the user passes a dataset name; it needs network access (or a warm HF cache) and
is not exercised by the offline tests. It expects the ``babi_qa`` schema (``facebook/babi_qa``,
configs such as ``en-qa1``): one row per story with a ``story`` column of parallel lists ``id``,
``type`` (0 statement, 1 question), ``text``, ``supporting_ids`` and ``answer``. Rows are written
back as bAbI lines and go through the same parser, so the result and its checks match local files.
"""

from __future__ import annotations

import logging

from rmt_scale.data.babi import BabiSample, parse_babi_lines, task_number
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

_HF_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def load_babi_hub(
    task: str, name: str, split: str = "train", config: str | None = None
) -> list[BabiSample]:
    """Load a bAbI task split with ``datasets.load_dataset``.

    Args:
        task: ``"qa1"`` .. ``"qa20"``.
        name: Hub dataset name, e.g. ``"facebook/babi_qa"``, or a local dataset directory.
        split: ``"train"``, ``"validation"`` or ``"test"``; the dataset must have it.
        config: Dataset config; default ``"en-qa{N}"``.

    Raises:
        DataError: If the dataset lacks the split or the ``story`` column.
    """
    import datasets  # deferred: only this fallback needs the Hub

    config = config or f"en-qa{task_number(task)}"
    source = f"{name}[{config}/{split}]"
    logger.info("loading bAbI %s from the Hugging Face dataset %s", task, source)
    try:
        rows = datasets.load_dataset(name, config, split=_HF_SPLITS.get(split, split))
    except ValueError as err:  # unknown split or config
        raise DataError(f"{source}: {err}".splitlines()[0]) from err
    if "story" not in rows.column_names:
        raise DataError(f"{source}: expected a 'story' column (babi_qa schema), found "
                        f"{rows.column_names}")
    lines = []
    for row in rows:
        story = row["story"]
        for line_id, kind, text, support, answer in zip(
            story["id"], story["type"], story["text"], story["supporting_ids"], story["answer"],
            strict=True,
        ):
            if kind == 1:
                lines.append(f"{line_id} {text}\t{answer}\t{' '.join(map(str, support))}")
            else:
                lines.append(f"{line_id} {text}")
    return parse_babi_lines(lines, source=source, task=task)
