"""`rmt-scale eval --data SOURCE`: accuracy on your own QA rows, or on the official BABILong files.

* Your rows (any QA source of rmt_scale.data.qa_dataset: .jsonl/.json/.parquet, directories, globs,
  datasets, with a field mapping and a template): each answer is generated greedily and scored two
  ways (rmt_scale.evaluation.scoring): exact match of its first line and whether it contains the
  answer, both normalised. Rows are grouped by prompt length into buckets of up to 1k, 2k, 4k ...
  tokens; the table and heatmap have one row per score and one column per bucket, like BABILong's
  tasks x lengths.
* The official BABILong layout (a directory that rmt_scale.data.babilong_layout recognises, or a
  `RMT-team/babilong*` dataset in the local cache): tasks x lengths with the official prompt
  (template `babilong`) and the official scorer, exactly as `rmt-scale eval` scores the samples it
  generates.

Both write the same results.json, results.csv and heatmap as `rmt-scale eval`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rmt_scale.data import LeftPadCollator, babilong_layout, babilong_official_dataset, qa_dataset
from rmt_scale.data.sources import hub_snapshot
from rmt_scale.errors import DataError
from rmt_scale.evaluation.accuracy import (
    CellResult,
    EvalReport,
    SampleResult,
    evaluate_cell,
    peak_rss_mib,
)
from rmt_scale.evaluation.models import EvalModel, generate_answers
from rmt_scale.evaluation.scoring import candidate_labels, contains_answer, exact_match
from rmt_scale.model.loading import pad_token_id

logger = logging.getLogger(__name__)

SCORES = ("exact match", "contains")
# Dataset names of the official BABILong data (read without a local layout to inspect).
OFFICIAL_NAMES = ("RMT-team/babilong",)


@dataclass
class QASampleResult(SampleResult):
    """One of your rows: `correct` is the exact match; `contains` and `source` (file:row) added."""

    contains: bool = False
    source: str = ""


def official_layout(source: str, hub_cache: str | Path | None = None) -> dict[str, list[str]] | None:
    """The lengths -> tasks of `source` when it holds the official BABILong data, else None.

    A local directory in one of the official layouts, or a dataset name: its snapshot in the local
    Hub cache, or (a `RMT-team/babilong*` name) its prepared `datasets` cache, which cannot be
    listed ({} then: give --tasks and --lengths).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return babilong_layout(path) or None
    if path.exists():
        return None
    snapshot = hub_snapshot(str(source), hub_cache)
    if snapshot is not None:
        return babilong_layout(snapshot) or None
    return {} if str(source).startswith(OFFICIAL_NAMES) else None


def length_bucket(prompt_tokens: int) -> tuple[str, int]:
    """The bucket of a prompt: ("≤1k", 1024), ("≤2k", 2048), ("≤4k", 4096), ..."""
    kilo = 1
    while kilo * 1024 < prompt_tokens:
        kilo *= 2
    return (f"≤{kilo}k" if kilo < 1024 else f"≤{kilo // 1024}M"), kilo * 1024


def _answer_rows(eval_model: EvalModel, data: Any, indices: Sequence[int], batch_size: int,
                 max_new_tokens: int, progress: bool, desc: str) -> tuple[list[str], float, int]:
    """Greedy outputs for rows `indices` of a tokenised QA dataset: (texts, seconds, tokens read)."""
    collate = LeftPadCollator(pad_token_id(eval_model.tokenizer, eval_model.causal_lm))
    prompt_lengths = data["prompt_length"]
    total = sum(eval_model.tokens_read(prompt_lengths[i], max_new_tokens) for i in indices)
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc=desc, disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    outputs: list[str] = []
    seconds = 0.0
    for first in range(0, len(indices), batch_size):
        chosen = indices[first: first + batch_size]
        rows = data.select(chosen)
        batch = collate([{"input_ids": row["input_ids"][: row["prompt_length"]]} for row in rows])
        tick = time.perf_counter()
        new = generate_answers(eval_model, batch["input_ids"], batch["attention_mask"],
                               max_new_tokens, on_tokens=bar.update)
        seconds += time.perf_counter() - tick
        outputs += eval_model.tokenizer.batch_decode(new, skip_special_tokens=True)
    bar.close()
    return outputs, seconds, total


def evaluate_qa_data(eval_model: EvalModel, source: str | Sequence[str], *,
                     fields: Mapping[str, str] | None = None, template: str = "plain",
                     num_samples: int = 25, batch_size: int = 1, max_new_tokens: int = 16,
                     cache_dir: str | Path | None = None, progress: bool = True) -> EvalReport:
    """Exact match and contains on your QA rows, per prompt-length bucket.

    Args:
        eval_model: From :func:`rmt_scale.evaluation.load_eval_model`.
        source: Files, directories, globs or dataset names (rmt_scale.data.resolve_sources).
        fields: Your field names (rmt_scale.data.qa_dataset).
        template: "plain", "babilong", "chat" or a pattern with {question}.
        num_samples: Rows per bucket (the first ones, in file order).
        batch_size: Rows per generate call (left-padded).
        max_new_tokens: Tokens generated per answer.
        cache_dir: Where `datasets` caches the tokenised rows.
        progress: Show a progress bar per bucket.
    """
    data = qa_dataset(source, eval_model.tokenizer, fields=fields, template=template,
                      cache_dir=cache_dir)
    buckets: dict[str, list[int]] = {}
    limits: dict[str, int] = {}
    for index, tokens in enumerate(data["prompt_length"]):
        name, limit = length_bucket(tokens)
        limits[name] = limit
        if len(buckets.setdefault(name, [])) < num_samples:
            buckets[name].append(index)
    lengths = sorted(buckets, key=limits.__getitem__)
    settings = {"tasks": list(SCORES), "lengths": lengths, "corner": "score \\ prompt tokens",
                "samples": num_samples,
                "data": [str(s) for s in ([source] if isinstance(source, (str, Path)) else source)],
                "template": template, "fields": dict(fields or {}), "batch_size": batch_size,
                "max_new_tokens": max_new_tokens}
    report = EvalReport(model=eval_model.describe(), settings=settings)
    start = time.perf_counter()
    for length in lengths:
        indices = buckets[length]
        outputs, seconds, total = _answer_rows(eval_model, data, indices, batch_size,
                                               max_new_tokens, progress, f"prompts {length} tokens")
        rows = data.select(indices).select_columns(["question", "answer", "prompt_length", "source"])
        exact = contains = 0
        for index, row, output in zip(indices, rows, outputs, strict=True):
            hit, inside = exact_match(row["answer"], output), contains_answer(row["answer"], output)
            exact += hit
            contains += inside
            report.predictions.append(QASampleResult(
                "qa", length, index, row["question"], row["answer"], output, hit,
                row["prompt_length"], contains=inside, source=row["source"]))
        prompt_tokens = sum(rows["prompt_length"]) / len(indices)
        for score, correct in zip(SCORES, (exact, contains), strict=True):
            report.cells.append(CellResult(score, length, limits[length], len(indices), correct,
                                           prompt_tokens, total / len(indices), seconds,
                                           total / seconds if seconds else 0.0))
        logger.info("prompts %s tokens: %d rows, exact match %d, contains %d", length,
                    len(indices), exact, contains)
    report.seconds = time.perf_counter() - start
    report.peak_rss_mib = peak_rss_mib()
    return report


def evaluate_babilong_official(eval_model: EvalModel, source: str, tasks: Sequence[str],
                               lengths: Sequence[str], *, num_samples: int = 25,
                               template: str = "babilong", batch_size: int = 1,
                               max_new_tokens: int = 16, cache_dir: str | Path | None = None,
                               available: Mapping[str, Sequence[str]] | None = None,
                               progress: bool = True) -> EvalReport:
    """BABILong accuracy on the official files, tasks x lengths, with the official scorer.

    Args:
        source: A directory in an official layout or a dataset name in the local cache.
        tasks, lengths: What to read (`qa1`, `4k`, ...).
        num_samples: Rows per (task, length), the first ones (as the official evaluation).
        template: "babilong" (the official prompt), "chat" or "plain".
        available: The lengths -> tasks the data has (:func:`official_layout`): other cells are
            left out (their table entry is "-"); None reads every cell and fails on a missing one.
    """
    collate = LeftPadCollator(pad_token_id(eval_model.tokenizer, eval_model.causal_lm))
    settings = {"tasks": list(tasks), "lengths": list(lengths), "samples": num_samples,
                "data": str(source), "template": template, "batch_size": batch_size,
                "max_new_tokens": max_new_tokens}
    report = EvalReport(model=eval_model.describe(), settings=settings)
    start = time.perf_counter()
    for task in tasks:
        answers: set[str] = set()
        for length in lengths:
            if available is not None and task not in available.get(length, ()):
                continue
            data = babilong_official_dataset(source, task, length, eval_model.tokenizer,
                                             template=template, cache_dir=cache_dir)
            data = data.select(range(min(num_samples, len(data))))
            answers.update(data["answer"])
            labels = candidate_labels(task, answers)
            report.cells.append(evaluate_cell(eval_model, data, task, length, labels, collate,
                                              batch_size, max_new_tokens, progress, report))
        report.labels[task] = candidate_labels(task, answers)
    if not report.cells:
        raise DataError(f"{source}: no BABILong data for tasks {', '.join(tasks)} at lengths "
                        f"{', '.join(lengths)}")
    report.seconds = time.perf_counter() - start
    report.peak_rss_mib = peak_rss_mib()
    return report
