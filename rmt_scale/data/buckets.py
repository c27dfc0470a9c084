"""Which QA samples each curriculum stage trains on, and what happens to samples that are too long.

A sample of ``t`` tokens fills ``ceil(t / segment_size)`` segments. The curriculum runs stages of
increasing segment counts; :func:`stage_samples` gives a stage with ``n`` segments the samples that
fit ``n`` segments and need more than the previous, shorter stage (so each stage trains on its own
length), or, for a stage with ``vary_n_segments``, every sample that fits ``n`` (shorter ones
mixed in). :func:`bucket_counts` is the histogram the start-up plan prints.

Samples longer than the last stage are handled by :func:`fit_to_length` under one policy, counted
and logged, never silently:

* ``"skip"`` (default): drop them;
* ``"truncate"``: cut tokens from the start of the context (the end of a long document is kept,
  next to the question), as many as needed; a sample whose context is too short to absorb the cut
  is dropped and counted;
* ``"error"``: stop with a DataError naming the first such sample's ``file:row``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rmt_scale.data.caching import cache_key
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

LONG_SAMPLE_POLICIES = ("skip", "truncate", "error")


def num_segments(num_tokens: int, segment_size: int) -> int:
    """Segments a sample of ``num_tokens`` tokens fills (at least one)."""
    return max(1, -(-num_tokens // segment_size))


def sample_segments(dataset: Any, segment_size: int) -> list[int]:
    """Segments of every sample of a :func:`rmt_scale.data.qa_dataset` (its ``num_tokens``)."""
    if segment_size < 1:
        raise DataError(f"segment_size must be >= 1, got {segment_size}")
    return [num_segments(n, segment_size) for n in dataset["num_tokens"]]


def bucket_counts(segments: Sequence[int]) -> dict[int, int]:
    """How many samples fill exactly n segments, by n ascending."""
    return dict(sorted(Counter(segments).items()))


def stage_samples(
    segments: Sequence[int],
    stages: Sequence[int],
    vary_n_segments: bool | Sequence[bool] = False,
    segment_size: int | None = None,
) -> list[list[int]]:
    """Indices of the samples each stage draws from.

    Args:
        segments: Segments per sample (:func:`sample_segments`).
        stages: Segments of each stage, in curriculum order.
        vary_n_segments: Per stage (or one value for all): take every sample that fits the stage
            rather than only those longer than the previous stages.
        segment_size: Only for messages.

    Raises:
        DataError: If a stage gets no samples.
    """
    vary = ([vary_n_segments] * len(stages) if isinstance(vary_n_segments, bool)
            else list(vary_n_segments))
    if len(vary) != len(stages):
        raise DataError(f"{len(vary)} vary_n_segments values for {len(stages)} stages")
    chosen: list[list[int]] = []
    for index, (n, mix) in enumerate(zip(stages, vary, strict=True)):
        low = 1 if mix else 1 + max((s for s in stages[:index] if s < n), default=0)
        picked = [i for i, k in enumerate(segments) if low <= k <= n]
        if not picked:
            size = f" of {segment_size} tokens" if segment_size else ""
            have = (f"samples fill {min(segments)} to {max(segments)} segments" if segments
                    else "there are no samples")
            raise DataError(f"curriculum stage {index} ({n} segments{size}) has no samples with "
                            f"{low}..{n} segments: {have}; change the stages or turn on "
                            "vary_n_segments")
        chosen.append(picked)
    return chosen


@dataclass(frozen=True)
class FitReport:
    """What :func:`fit_to_length` did, for the start-up plan.

    Attributes:
        total: Samples before.
        kept: Samples after (including truncated ones).
        skipped: Samples dropped for being too long.
        truncated: Samples whose context was cut from the left.
        max_tokens: The limit (last stage's segments x segment size).
        policy: The long-sample policy.
    """

    total: int
    kept: int
    skipped: int
    truncated: int
    max_tokens: int
    policy: str

    def __str__(self) -> str:
        return (f"{self.kept}/{self.total} samples fit {self.max_tokens} tokens "
                f"({self.truncated} truncated, {self.skipped} skipped; policy {self.policy})")


def _truncate(batch: dict[str, list], indices: list[int], cuts: dict[int, int]) -> dict[str, list]:
    for row, index in enumerate(indices):
        cut = cuts.get(index)
        if not cut:
            continue
        start = batch["context_start"][row]
        for column in ("input_ids", "labels"):
            values = batch[column][row]
            batch[column][row] = values[:start] + values[start + cut:]
        batch["prompt_length"][row] -= cut
        batch["num_tokens"][row] -= cut
        batch["context_end"][row] -= cut
    return batch


def fit_to_length(
    dataset: Any, segment_size: int, max_segments: int, policy: str = "skip"
) -> tuple[Any, FitReport]:
    """Make every sample fit ``max_segments`` segments under a long-sample policy.

    Args:
        dataset: A :func:`rmt_scale.data.qa_dataset`.
        segment_size: Tokens per segment.
        max_segments: Segments of the longest stage.
        policy: ``"skip"``, ``"truncate"`` or ``"error"`` (see the module docstring).

    Returns:
        The fitted dataset (the same object when every sample fits) and a :class:`FitReport`.

    Raises:
        DataError: For an unknown policy, under ``"error"`` for the first long sample, and when no
            sample is left.
    """
    if policy not in LONG_SAMPLE_POLICIES:
        raise DataError(f"unknown long-sample policy {policy!r}: use "
                        f"{', '.join(LONG_SAMPLE_POLICIES)}")
    max_tokens = segment_size * max_segments
    lengths = dataset["num_tokens"]
    long = [i for i, n in enumerate(lengths) if n > max_tokens]
    total = len(lengths)
    if not long:
        return dataset, FitReport(total, total, 0, 0, max_tokens, policy)
    limit = f"{max_tokens} tokens ({max_segments} segments of {segment_size})"
    if policy == "error":
        first = long[0]
        raise DataError(f"{dataset[first]['source']}: {lengths[first]} tokens, longer than the "
                        f"last stage's {limit} ({len(long)} samples are that long); choose the "
                        "long-sample policy 'skip' or 'truncate'")
    cuts: dict[int, int] = {}
    if policy == "truncate":
        starts, ends = dataset["context_start"], dataset["context_end"]
        for i in long:
            cut = lengths[i] - max_tokens
            if starts[i] >= 0 and ends[i] - starts[i] >= cut:
                cuts[i] = cut
    drop = set(long) - set(cuts)
    if len(drop) == total:
        hint = ("add a longer stage: their contexts are too short to absorb the cut"
                if policy == "truncate" else
                "add a longer stage or use the policy 'truncate' to cut their contexts")
        raise DataError(f"all {total} samples are longer than the last stage's {limit}, so none "
                        f"fits a stage under the policy {policy!r}; {hint}")
    fitted = dataset
    if cuts:
        fitted = fitted.map(
            _truncate, batched=True, with_indices=True, fn_kwargs={"cuts": cuts},
            new_fingerprint=cache_key("qa-fit", parent=dataset._fingerprint, cuts=sorted(cuts.items())),
            desc=f"Truncating {len(cuts)} contexts",
        )
    if drop:
        fitted = fitted.select([i for i in range(total) if i not in drop])
    report = FitReport(total, total - len(drop), len(drop), len(cuts), max_tokens, policy)
    logger.warning("%d samples are longer than the last stage's %s: %s", len(long), limit, report)
    return fitted, report
