"""Loss and perplexity per segment position, with and without memory (`rmt-scale eval-lm`).

Each sample is a window of `num_segments * segment_size` tokens of one document, read from the
same sources as training's `data.kind: text` (files, directories, globs, datasets;
:func:`rmt_scale.data.document_dataset` and :func:`rmt_scale.data.plan_windows`, the same
short-document policy). It is read twice by the same base model:

* with memory: the RMT model, memory carried from segment to segment;
* without memory: the same base with `num_mem_tokens=0`, so each segment is read alone.

Both score the same tokens (the first token of segment k+1 is predicted from the end of segment
k in both), so the curves differ only by what memory carries. The RMT papers show the loss of
later segments falling with memory while without it every position looks like the first.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rmt_scale.config import RMTConfig
from rmt_scale.data import TextWindows, document_dataset, plan_windows
from rmt_scale.errors import ConfigError, DataError
from rmt_scale.evaluation.accuracy import peak_rss_mib
from rmt_scale.evaluation.models import EvalModel, segment_hook
from rmt_scale.model.recurrent import RecurrentMemoryModel

logger = logging.getLogger(__name__)

LM_RESULTS_JSON = "lm_results.json"
LM_RESULTS_CSV = "lm_results.csv"
LM_PLOT_PNG = "lm_segments.png"
LM_OUTPUT_FILES = (LM_RESULTS_JSON, LM_RESULTS_CSV, LM_PLOT_PNG)
VARIANTS = ("memory", "no_memory")


@dataclass
class SegmentReport:
    """Per segment position: scored tokens and summed loss of each variant."""

    model: dict
    settings: dict
    tokens: list[int]
    loss_sum: dict[str, list[float]]
    seconds: float = 0.0
    peak_rss_mib: float | None = None

    def loss(self, variant: str) -> list[float]:
        return [s / max(n, 1) for s, n in zip(self.loss_sum[variant], self.tokens, strict=True)]

    def rows(self) -> list[dict]:
        rows = []
        for index, tokens in enumerate(self.tokens):
            row = {"segment": index + 1, "tokens": tokens}
            for variant in VARIANTS:
                loss = self.loss(variant)[index]
                row[f"loss_{variant}"] = loss
                row[f"ppl_{variant}"] = math.exp(min(loss, 700.0))
            rows.append(row)
        return rows

    def table(self) -> str:
        from rmt_scale.evaluation.tables import markdown_table

        return markdown_table(
            ["segment", "tokens", "loss (memory)", "ppl (memory)", "loss (no memory)", "ppl (no memory)"],
            [[r["segment"], r["tokens"], f"{r['loss_memory']:.3f}", f"{r['ppl_memory']:.2f}",
              f"{r['loss_no_memory']:.3f}", f"{r['ppl_no_memory']:.2f}"] for r in self.rows()],
        )

    def write(self, out_dir: str | Path, title: str = "") -> dict[str, Path]:
        """Write lm_results.json, lm_results.csv and the loss-per-segment PNG into `out_dir`."""
        from rmt_scale.evaluation.plots import plot_segment_losses

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / LM_RESULTS_JSON, "csv": out / LM_RESULTS_CSV, "plot": out / LM_PLOT_PNG}
        rows = self.rows()
        payload = {"model": self.model, "settings": self.settings, "segments": rows,
                   "seconds": round(self.seconds, 3), "peak_rss_mib": self.peak_rss_mib}
        paths["json"].write_text(json.dumps(payload, indent=2) + "\n")
        with paths["csv"].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_segment_losses({"with memory": self.loss("memory"),
                             "without memory (each segment alone)": self.loss("no_memory")},
                            paths["plot"], title=title)
        return paths


def without_memory(model: RecurrentMemoryModel) -> RecurrentMemoryModel:
    """The same base (adapter included) read segment by segment with no memory."""
    config = RMTConfig(num_mem_tokens=0, segment_size=model.config.segment_size)
    return RecurrentMemoryModel.wrap(model.base, config).eval()


@torch.no_grad()
def segment_loss_sums(model: RecurrentMemoryModel, input_ids: torch.Tensor, labels: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) summed loss and (N,) scored tokens of each segment position of one batch."""
    output = model(input_ids, labels=labels)
    return output.segment_loss_sum.double().cpu(), output.segment_tokens.cpu()


def evaluate_segments(eval_model: EvalModel, files: Sequence[str | Path], num_segments: int,
                      num_samples: int | None = 8, batch_size: int = 1,
                      cache_dir: str | Path | None = None, progress: bool = True, *,
                      field: str = "text", short_documents: str = "skip") -> SegmentReport:
    """Per-segment loss of `num_samples` text samples, with and without memory.

    Args:
        eval_model: A memory model (trained, or a base wrapped with fresh memory).
        files: Sources of documents: files, directories, globs or dataset names
            (:func:`rmt_scale.data.resolve_sources`).
        num_segments: Segments per sample; each sample is `num_segments * segment_size` tokens.
        num_samples: Samples to read (the first ones); None: all the text gives.
        batch_size: Samples per forward pass.
        cache_dir: Where `datasets` caches the tokenised text.
        progress: Show a progress bar over tokens read (its rate is tokens/s).
        field: The text field of .jsonl/.json/.parquet rows and datasets.
        short_documents: Documents shorter than a sample: "skip" or "pack" (joined with EOS).
    """
    if not eval_model.has_memory:
        raise ConfigError("eval-lm compares memory with no memory: pass a memory model, or a base "
                          "checkpoint with --num-mem-tokens to give it fresh memory")
    if num_segments < 1 or batch_size < 1 or (num_samples is not None and num_samples < 1):
        raise DataError("segments, samples and batch size must be >= 1")
    model = eval_model.model
    segment_size = model.config.segment_size
    tokenizer = eval_model.tokenizer
    documents = document_dataset(list(files), tokenizer, field=field, cache_dir=cache_dir)
    plan = plan_windows(documents["num_tokens"], num_segments * segment_size, short_documents)
    if not plan.windows:
        raise DataError(f"no document holds {num_segments * segment_size} tokens (one sample of "
                        f"{num_segments} x {segment_size}): {plan}; give longer text, fewer "
                        "--segments, or --short-documents pack")
    if num_samples is not None:
        plan.windows = plan.windows[:num_samples]
    windows = TextWindows(documents, plan, tokenizer.eos_token_id)
    models = {"memory": model, "no_memory": without_memory(model)}
    sums = {name: torch.zeros(num_segments, dtype=torch.float64) for name in VARIANTS}
    tokens = torch.zeros(num_segments, dtype=torch.long)
    bar = tqdm(total=2 * len(windows) * num_segments * segment_size, unit="tok", unit_scale=True,
               desc="eval-lm", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    device = eval_model.device
    start = time.perf_counter()
    for first in range(0, len(windows), batch_size):
        batch = [windows[i] for i in range(first, min(first + batch_size, len(windows)))]
        input_ids = torch.tensor([sample["input_ids"] for sample in batch], device=device)
        labels = torch.tensor([sample["labels"] for sample in batch], device=device)
        for name, variant in models.items():
            with segment_hook(variant, bar.update):
                loss_sum, count = segment_loss_sums(variant, input_ids, labels)
            sums[name] += loss_sum
            if name == "memory":
                tokens += count
        done = tokens.sum().clamp(min=1)
        bar.set_postfix_str(f"loss {float(sums['memory'].sum() / done):.3f} with memory, "
                            f"{float(sums['no_memory'].sum() / done):.3f} without", refresh=False)
    bar.close()
    settings = {"files": [str(f) for f in files], "segments": num_segments,
                "segment_size": segment_size, "samples": len(windows), "batch_size": batch_size,
                "field": field, "short_documents": short_documents}
    report = SegmentReport(eval_model.describe(), settings, tokens.tolist(),
                           {name: values.tolist() for name, values in sums.items()},
                           time.perf_counter() - start, peak_rss_mib())
    logger.info("eval-lm: %d samples x %d segments in %.1f s", len(windows), num_segments, report.seconds)
    return report
