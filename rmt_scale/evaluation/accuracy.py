"""Accuracy over tasks x lengths on BABILong-style samples, and the files that record it.

    for task in tasks:                         # qa1, qa2, ...
        labels = candidate labels of the task  # BABILong's list + every answer in the data
        for length in lengths:                 # 0k .. 1M
            samples = babilong_dataset(task, length, num_samples, split="test", seed=...)
            answers = generate(prompt) for each batch of samples   # memory reads the whole prompt
            correct = compare_answers(answer, output, question, labels)

One sample is held as its token ids; the memory model reads them a segment at a time, so a
1M-token sample costs its ids (8 MB) plus one segment's activations.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from rmt_scale.data import (
    LeftPadCollator,
    babilong_dataset,
    load_babi_samples,
    parse_length,
    task_labels,
)
from rmt_scale.data.babi import task_number
from rmt_scale.data.generator import require_generator
from rmt_scale.errors import DataError
from rmt_scale.evaluation.models import EvalModel, generate_answers
from rmt_scale.evaluation.scoring import candidate_labels, compare_answers
from rmt_scale.model.loading import pad_token_id

logger = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
HEATMAP_PNG = "accuracy_heatmap.png"
OUTPUT_FILES = (RESULTS_JSON, RESULTS_CSV, HEATMAP_PNG)
CSV_COLUMNS = ("task", "length", "target_tokens", "samples", "correct", "accuracy",
               "mean_prompt_tokens", "mean_tokens_read", "seconds", "tokens_per_s")


@dataclass
class CellResult:
    """Accuracy of one (task, length) cell.

    Attributes:
        mean_prompt_tokens: Mean prompt length in tokens (the BOS included).
        mean_tokens_read: Mean prompt tokens the model saw: all of them with memory, the last
            `max_positions - max_new_tokens` for the full-attention baseline.
        seconds: Generation time of the cell (building the samples excluded).
        tokens_per_s: Prompt tokens read per second.
    """

    task: str
    length: str
    target_tokens: int
    samples: int
    correct: int
    mean_prompt_tokens: float
    mean_tokens_read: float
    seconds: float
    tokens_per_s: float

    @property
    def accuracy(self) -> float:
        """Fraction correct, 0..1."""
        return self.correct / self.samples if self.samples else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy}


@dataclass
class SampleResult:
    task: str
    length: str
    index: int
    question: str
    answer: str
    output: str
    correct: bool
    prompt_tokens: int


@dataclass
class EvalReport:
    """Everything one `rmt-scale eval` run found; `write` puts it into files."""

    model: dict
    settings: dict
    cells: list[CellResult] = field(default_factory=list)
    predictions: list[SampleResult] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mib: float | None = None

    def accuracy(self, task: str, length: str) -> float | None:
        for cell in self.cells:
            if cell.task == task and cell.length == length:
                return cell.accuracy
        return None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "settings": self.settings,
            "results": [cell.to_dict() for cell in self.cells],
            "labels": self.labels,
            "seconds": round(self.seconds, 3),
            "peak_rss_mib": self.peak_rss_mib,
            "predictions": [asdict(p) for p in self.predictions],
        }

    def table(self) -> str:
        """Accuracy (%) as a markdown table: tasks as rows, lengths as columns."""
        from rmt_scale.evaluation.tables import markdown_table

        lengths = self.settings["lengths"]
        rows = []
        for task in self.settings["tasks"]:
            values = [self.accuracy(task, length) for length in lengths]
            rows.append([task] + ["-" if v is None else f"{100 * v:.0f}" for v in values])
        corner = self.settings.get("corner", "task \\ length")  # your QA data: scores x buckets
        return markdown_table([corner] + list(lengths), rows)

    def write(self, out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
        """Write results.json, results.csv and the accuracy heatmap PNG into `out_dir`."""
        from rmt_scale.evaluation.plots import plot_accuracy_heatmap

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / RESULTS_JSON, "csv": out / RESULTS_CSV, "heatmap": out / HEATMAP_PNG}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        with paths["csv"].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for cell in self.cells:
                row = cell.to_dict()
                row["accuracy"] = f"{row['accuracy']:.4f}"
                row["mean_prompt_tokens"] = f"{row['mean_prompt_tokens']:.1f}"
                row["mean_tokens_read"] = f"{row['mean_tokens_read']:.1f}"
                row["seconds"] = f"{row['seconds']:.3f}"
                row["tokens_per_s"] = f"{row['tokens_per_s']:.1f}"
                writer.writerow(row)
        tasks, lengths = self.settings["tasks"], self.settings["lengths"]
        grid = [[self.accuracy(t, length) for length in lengths] for t in tasks]
        plot_accuracy_heatmap(grid, tasks, lengths, paths["heatmap"],
                              title=title or Path(self.model["path"]).name)
        return paths


def parse_tasks(text: str | Sequence[str], babi_dir: str | Path | None = None) -> list[str]:
    """`"qa1,qa2"` -> ["qa1", "qa2"], checked (and available offline when no `babi_dir`)."""
    names = text.split(",") if isinstance(text, str) else list(text)
    tasks = list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
    if not tasks:
        raise DataError("no tasks given: expected e.g. 'qa1,qa2'")
    for task in tasks:
        task_number(task)
        if babi_dir is None:
            require_generator(task)
    return tasks


def parse_lengths(text: str | Sequence[str]) -> list[str]:
    """`"0k,4k,1M"` -> ["0k", "4k", "1M"], each checked with :func:`rmt_scale.data.parse_length`."""
    names = text.split(",") if isinstance(text, str) else [str(n) for n in text]
    lengths = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not lengths:
        raise DataError("no lengths given: expected e.g. '0k,1k,4k'")
    for length in lengths:
        parse_length(length)
    return lengths


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far (Linux: ru_maxrss is in KiB)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def evaluate_babilong(eval_model: EvalModel, tasks: Sequence[str], lengths: Sequence[str],
                      num_samples: int, *, seed: int = 0, split: str = "test",
                      babi_dir: str | Path | None = None, noise_files: Sequence[str | Path] | None = None,
                      batch_size: int = 1, max_new_tokens: int = 16,
                      cache_dir: str | Path | None = None, progress: bool = True) -> EvalReport:
    """Generate and score answers for every (task, length).

    Args:
        eval_model: From :func:`rmt_scale.evaluation.load_eval_model`.
        tasks: bAbI task names ("qa1", ...).
        lengths: Length names ("0k", "4k", "1M") or token counts, as strings.
        num_samples: Samples per (task, length).
        seed: Seed of sample choice and noise; the same seed gives the same samples for every
            model, so runs are comparable.
        split: "test" (the bAbI test file, or held-out generated stories) or "validation".
        babi_dir: bAbI files; None uses the built-in generator (qa1-qa3).
        noise_files: Books for noise; None uses the built-in filler.
        batch_size: Samples per generate call (LEFT-padded).
        max_new_tokens: Tokens generated per answer.
        cache_dir: Where `datasets` caches the built samples.
        progress: Show a progress bar per cell, counting prompt tokens read (its rate is tokens/s).
    """
    if num_samples < 1:
        raise DataError(f"samples must be >= 1, got {num_samples}")
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    tokenizer = eval_model.tokenizer
    collate = LeftPadCollator(pad_token_id(tokenizer, eval_model.causal_lm))
    settings = {
        "tasks": list(tasks), "lengths": list(lengths), "samples": num_samples, "seed": seed,
        "split": split, "babi_dir": None if babi_dir is None else str(babi_dir),
        "noise": "filler" if not noise_files else [str(p) for p in noise_files],
        "batch_size": batch_size, "max_new_tokens": max_new_tokens,
    }
    report = EvalReport(model=eval_model.describe(), settings=settings)
    start = time.perf_counter()
    for task in tasks:
        train = load_babi_samples(task, "train", babi_dir)
        answers = set(task_labels(train))
        for length in lengths:
            data = babilong_dataset(task, length, num_samples, tokenizer, seed=seed,
                                    babi_dir=babi_dir, noise_files=noise_files, split=split,
                                    cache_dir=cache_dir)
            answers.update(data["answer"])  # the column alone: rows hold all their ids
            labels = candidate_labels(task, answers)
            report.cells.append(evaluate_cell(eval_model, data, task, length, labels, collate,
                                              batch_size, max_new_tokens, progress, report))
        report.labels[task] = candidate_labels(task, answers)
    report.seconds = time.perf_counter() - start
    report.peak_rss_mib = peak_rss_mib()
    return report


def evaluate_cell(eval_model: EvalModel, data, task: str, length: str, labels: list[str],
                  collate: LeftPadCollator, batch_size: int, max_new_tokens: int,
                  progress: bool, report: EvalReport) -> CellResult:
    """Generate answers to the rows of `data` (a BABILong-style dataset with input_ids,
    prompt_length, question, answer) and score them with BABILong's rule; the predictions go to
    `report`. Used for generated samples and for the official BABILong files alike."""
    # Only what is used, ids as one tensor: a 1M-token row is 8 MB, not 1M Python ints twice over.
    rows = data.select_columns(["input_ids", "question", "answer"]).with_format(
        "torch", columns=["input_ids"], output_all_columns=True)
    prompt_lengths = list(data["prompt_length"])
    total = sum(eval_model.tokens_read(n, max_new_tokens) for n in prompt_lengths)
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc=f"{task} {length}",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    correct = 0
    seconds = 0.0
    for first in range(0, len(data), batch_size):
        indices = range(first, min(first + batch_size, len(data)))
        batch_rows = [rows[i] for i in indices]
        features = [{"input_ids": row["input_ids"][: prompt_lengths[i]]}
                    for i, row in zip(indices, batch_rows, strict=True)]
        batch = collate(features)
        del features
        tick = time.perf_counter()
        new = generate_answers(eval_model, batch["input_ids"], batch["attention_mask"],
                               max_new_tokens, on_tokens=bar.update)
        seconds += time.perf_counter() - tick
        outputs = eval_model.tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, row, output in zip(indices, batch_rows, outputs, strict=True):
            ok = compare_answers(row["answer"], output, row["question"], labels)
            correct += ok
            report.predictions.append(SampleResult(task, length, i, row["question"], row["answer"],
                                                   output, ok, prompt_lengths[i]))
        bar.set_postfix_str(f"acc={100 * correct / (indices[-1] + 1):.0f}%", refresh=False)
    bar.close()
    samples = max(len(data), 1)
    cell = CellResult(task, length, parse_length(length), len(data), correct,
                      sum(prompt_lengths) / samples, total / samples, seconds,
                      total / seconds if seconds else 0.0)
    logger.info("%s %s: %d/%d correct, %.0f prompt tokens on average, %.1f s, %.0f tokens/s",
                task, length, correct, cell.samples, cell.mean_prompt_tokens, seconds, cell.tokens_per_s)
    return cell
