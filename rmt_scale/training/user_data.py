"""The user's own data in a training run (`data.kind: text` and `qa`): read and tokenised once,
split into training and validation, and given to the curriculum's stages, before any model is built.

    data = prepare_user_data(config, tokenizer)   # in build_plan, on every rank; a file lock lets one
                                                  # rank tokenise while the others wait, then read
                                                  # its `datasets` cache
    data.describe()                               # the plan's data lines: per stage, the windows or
                                                  # samples, and what the policies left out
    data.train_samples(stage, num_segments)       # what a training step draws from
    data.valid_samples(stage, num_segments)       # what validation reads (None: nothing)

text: a stage draws windows of num_segments * segment_size tokens cut from one document each,
labels = input_ids (rmt_scale.data.plan_windows; documents shorter than the window follow
data.text.short_documents). A stage that varies its segments draws, at each step, windows of the
drawn length.

qa: samples longer than the last stage follow data.qa.long_samples (rmt_scale.data.fit_to_length);
a stage draws the samples of its bucket (rmt_scale.data.stage_samples): those that fit its
segments and need more than the previous, shorter stage, or with vary_n_segments every sample that
fits (shorter ones mixed in). Labels are the answer tokens only.

Validation: data.valid_sources, read the same way, or data.valid_fraction of the documents
(contexts, for qa) held out with a fixed seed, so every run validates on the same texts. At most
data.valid_samples windows or samples per stage are read.

Every problem in the data (a missing field, an empty document, a stage that no sample fits) is a
DataError raised here, so every rank stops with the same one line before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rmt_scale.data import (
    TextWindows,
    WindowPlan,
    babilong_official_dataset,
    bucket_counts,
    document_dataset,
    fit_to_length,
    holdout_split,
    plan_windows,
    qa_dataset,
    sample_segments,
    stage_samples,
    window_counts,
)
from rmt_scale.errors import ConfigError, DataError
from rmt_scale.training.config import TrainConfig

logger = logging.getLogger(__name__)

# The held-out validation part depends on the data only, never on the run seed (see the docstring).
HOLDOUT_SEED = 0


@contextlib.contextmanager
def _one_rank_at_a_time() -> Iterator[None]:
    """Serialise data preparation between the processes of this machine (no process group yet):
    the first fills the `datasets` cache, the others then read it instead of tokenising again."""
    import datasets
    from filelock import FileLock

    root = Path(datasets.config.HF_DATASETS_CACHE)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "rmt_scale_user_data.lock")):
        yield


def prepare_user_data(config: TrainConfig, tokenizer: Any) -> TextData | QAData:
    """Read, tokenise, split and assign to stages the data of kind text or qa.

    Raises:
        DataError: Bad sources or rows, no data left after the policies, a stage with no data.
        ConfigError: A tokenizer larger than the random base's vocabulary.
    """
    model = config.model
    if model.init == "random" and len(tokenizer) > model.random.vocab_size:
        raise ConfigError(f"model.random.vocab_size {model.random.vocab_size} is smaller than the "
                          f"tokenizer's {len(tokenizer)} tokens; set it to at least {len(tokenizer)}")
    with _one_rank_at_a_time():
        if config.data.kind == "text":
            return TextData.build(config, tokenizer)
        return QAData.build(config, tokenizer)


def _holdout(dataset: Any, keys: Sequence[Any], fraction: float) -> tuple[Any, Any]:
    train, valid = holdout_split(keys, fraction, HOLDOUT_SEED)
    return dataset.select(train), dataset.select(valid)


def _spread(count: int, cap: int) -> list[int]:
    """`cap` of `count` positions (all when fewer), the same for every run, in order."""
    if count <= cap:
        return list(range(count))
    return sorted(random.Random(HOLDOUT_SEED).sample(range(count), cap))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _segments_text(low: int, high: int) -> str:
    return f"{high} segment{'s' if high > 1 else ''}" if low == high else f"{low}-{high} segments"


def _validation_text(config: TrainConfig, units: str, count: int) -> str:
    data = config.data
    if data.valid_sources:
        where = f"data.valid_sources ({_plural(count, units)})"
    elif data.valid_fraction:
        where = (f"{_plural(count, units)} held out (data.valid_fraction={data.valid_fraction}, "
                 f"fixed seed {HOLDOUT_SEED})")
    else:
        return "validation: none (set data.valid_sources or data.valid_fraction)"
    if data.valid_samples == 0:
        return f"validation: off (data.valid_samples=0); {where}"
    return f"validation: {where}; at most {data.valid_samples} per stage"


@dataclasses.dataclass
class TextData:
    """Documents of kind text and the windows of every length the curriculum reads."""

    config: TrainConfig
    tokenizer: Any
    summary: str
    documents: Any
    valid_documents: Any | None
    windows: dict[int, WindowPlan]
    valid_windows: dict[int, WindowPlan]

    @classmethod
    def build(cls, config: TrainConfig, tokenizer: Any) -> TextData:
        data, text = config.data, config.data.text
        size = config.rmt.segment_size

        def read(sources: Sequence[str]) -> Any:
            return document_dataset(list(sources), tokenizer, field=text.field,
                                    strip_license=text.strip_license)

        documents, valid = read(text.sources), None
        lengths = documents["num_tokens"]
        summary = (f"data:        text, {_plural(len(lengths), 'document')} ({sum(lengths):,} tokens) "
                   f"from {', '.join(text.sources)}; documents shorter than a window: "
                   f"{text.short_documents}")
        if data.valid_sources:
            valid = read(data.valid_sources)
        elif data.valid_fraction:
            documents, valid = _holdout(documents, list(range(len(documents))), data.valid_fraction)
        lengths = documents["num_tokens"]
        drawn = [n for stage in config.curriculum.stages
                 for n in range(stage.min_segments if stage.vary_n_segments else stage.num_segments,
                                stage.num_segments + 1)]
        windows = window_counts(lengths, size, drawn, text.short_documents)
        valid_windows = {}
        if valid is not None and data.valid_samples:
            valid_lengths = valid["num_tokens"]
            for stage in config.curriculum.stages:
                plan = plan_windows(valid_lengths, stage.num_segments * size, text.short_documents)
                keep = _spread(len(plan.windows), data.valid_samples)
                valid_windows[stage.num_segments] = dataclasses.replace(
                    plan, windows=[plan.windows[i] for i in keep])
        stages = config.curriculum.stages

        def valid_count(index: int) -> int:
            plan = valid_windows.get(stages[index].num_segments)
            return 0 if plan is None else len(plan.windows)

        _check_advance_rules(config, valid_count, "windows")
        return cls(config, tokenizer, summary, documents, valid, windows, valid_windows)

    def train_samples(self, stage: int, num_segments: int) -> TextWindows:
        return TextWindows(self.documents, self.windows[num_segments], self.tokenizer.eos_token_id)

    def valid_samples(self, stage: int, num_segments: int) -> TextWindows | None:
        plan = self.valid_windows.get(num_segments)
        if plan is None or not plan.windows:
            return None
        return TextWindows(self.valid_documents, plan, self.tokenizer.eos_token_id)

    def describe(self) -> list[str]:
        config = self.config
        count = 0 if self.valid_documents is None else len(self.valid_documents)
        lines = [self.summary, f"  {_validation_text(config, 'document', count)}"]
        for index, stage in enumerate(config.curriculum.stages):
            low = stage.min_segments if stage.vary_n_segments else stage.num_segments
            for n in range(low, stage.num_segments + 1):
                line = f"  stage {index + 1}, {_segments_text(n, n)}: {self.windows[n]}"
                if n == stage.num_segments and self.valid_documents is not None:
                    plan = self.valid_windows.get(n)
                    line += f"; validation: {len(plan.windows) if plan else 0} windows"
                lines.append(line)
        return lines


def _check_advance_rules(config: TrainConfig, count: Any, units: str) -> None:
    """A stage that may end early on a validation metric needs validation data of its length."""
    if not config.data.has_validation():
        return  # TrainConfig refuses advance rules without validation data
    for index, stage in enumerate(config.curriculum.stages):
        if stage.advance is not None and count(index) == 0:
            raise DataError(f"curriculum stage {index + 1} ends early on validation "
                            f"{stage.advance.metric}, but the validation data has no {units} of "
                            f"its {stage.num_segments} segments; give longer validation data or "
                            "drop the stage's advance rule")


def _read_qa(config: TrainConfig, sources: Sequence[str], tokenizer: Any) -> Any:
    """The QA rows of `sources`, rendered and tokenised (official BABILong files with the preset)."""
    qa = config.data.qa
    template = qa.template_name()
    if qa.preset != "babilong":
        return qa_dataset(list(sources), tokenizer, fields=qa.fields, template=template, task=qa.task)
    import datasets

    parts = [babilong_official_dataset(source, qa.task, length, tokenizer, template=template)
             for source in sources for length in qa.lengths]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _bucket(segments: Sequence[int], config: TrainConfig, index: int) -> list[int]:
    """Indices a stage reads: its own bucket, or every sample that fits with vary_n_segments (the
    rule of rmt_scale.data.stage_samples, which raises where this may come back empty)."""
    stages = config.curriculum.stages
    n = stages[index].num_segments
    low = 1 if stages[index].vary_n_segments else \
        1 + max((s.num_segments for s in stages[:index] if s.num_segments < n), default=0)
    return [i for i, k in enumerate(segments) if low <= k <= n]


@dataclasses.dataclass
class QAData:
    """QA samples of kind qa, fitted to the last stage, and the samples of every stage."""

    config: TrainConfig
    tokenizer: Any
    summary: str
    samples: Any
    valid: Any | None
    fit: Any
    segments: list[int]
    pools: list[list[int]]
    valid_pools: list[list[int]]
    valid_total: int

    @classmethod
    def build(cls, config: TrainConfig, tokenizer: Any) -> QAData:
        data, qa = config.data, config.data.qa
        size = config.rmt.segment_size
        stages = config.curriculum.stages
        longest = max(stage.num_segments for stage in stages)
        samples, valid = _read_qa(config, qa.sources, tokenizer), None
        preset = f", preset babilong ({qa.task} at {', '.join(qa.lengths)})" if qa.preset else ""
        summary = (f"data:        qa, {_plural(len(samples), 'row')} from {', '.join(qa.sources)}"
                   f"{preset}; template {qa.template_name()}")
        if data.valid_sources:
            valid = _read_qa(config, data.valid_sources, tokenizer)
        elif data.valid_fraction:
            # By context: no validation question is about a text trained on.
            samples, valid = _holdout(samples, samples["group"], data.valid_fraction)
        samples, fit = fit_to_length(samples, size, longest, qa.long_samples)
        segments = sample_segments(samples, size)
        pools = stage_samples(segments, [s.num_segments for s in stages],
                              [s.vary_n_segments for s in stages], size)
        valid_pools: list[list[int]] = [[] for _ in stages]
        valid_total = 0 if valid is None else len(valid)
        if valid is not None and data.valid_samples:
            try:
                valid, _ = fit_to_length(valid, size, longest, qa.long_samples)
            except DataError as err:
                raise DataError(f"validation data: {err}") from None
            valid_segments = sample_segments(valid, size)
            for index in range(len(stages)):
                pool = _bucket(valid_segments, config, index)
                valid_pools[index] = [pool[i] for i in _spread(len(pool), data.valid_samples)]
        _check_advance_rules(config, lambda i: len(valid_pools[i]), "samples")
        return cls(config, tokenizer, summary, samples, valid, fit, segments, pools, valid_pools,
                   valid_total)

    def train_samples(self, stage: int, num_segments: int) -> Any:
        return self.samples.select(self.pools[stage]).select_columns(["input_ids", "labels"])

    def valid_samples(self, stage: int, num_segments: int) -> Any | None:
        if self.valid is None or not self.valid_pools[stage]:
            return None
        return self.valid.select(self.valid_pools[stage]).select_columns(["input_ids", "labels"])

    def describe(self) -> list[str]:
        config = self.config
        lines = [self.summary,
                 f"  {_validation_text(config, 'sample', self.valid_total)}",
                 f"  training samples longer than the last stage: {self.fit}",
                 "  samples by segments filled: "
                 + ", ".join(f"{n}: {count}" for n, count in bucket_counts(self.segments).items())]
        stages = config.curriculum.stages
        for index, stage in enumerate(stages):
            filled = [self.segments[i] for i in self.pools[index]]
            line = (f"  stage {index + 1}, {_segments_text(stage.num_segments, stage.num_segments)}: "
                    f"{len(filled)} samples of {_segments_text(min(filled), max(filled))}")
            if self.valid is not None:
                line += f"; validation: {len(self.valid_pools[index])} samples"
            lines.append(line)
        return lines
