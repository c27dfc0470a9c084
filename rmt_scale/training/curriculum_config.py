"""The `curriculum` and `schedule` sections of the training config: stages, early advance and the
learning-rate schedule restarted at every stage (the logic that uses them is curriculum.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rmt_scale.training.config_file import check as _check


@dataclass
class AdvanceRule:
    """Leave a stage early once a validation metric is good enough.

    Attributes:
        metric: "accuracy" (labelled tokens predicted right, higher is better) or "loss".
        threshold: Advance when accuracy >= threshold (or loss <= threshold).
        min_steps: Never advance before this many steps of the stage.
    """

    metric: str = "accuracy"
    threshold: float = 0.9
    min_steps: int = 0

    def __post_init__(self) -> None:
        _check(self.metric in ("accuracy", "loss"),
               f"advance.metric must be 'accuracy' or 'loss', got {self.metric!r}")

    def reached(self, metrics: dict[str, float]) -> bool:
        value = metrics[self.metric]
        if not math.isfinite(value):  # a NaN loss is no evidence of learning, whatever NaN compares to
            return False
        return value >= self.threshold if self.metric == "accuracy" else value <= self.threshold


@dataclass
class StageConfig:
    """One curriculum stage.

    Attributes:
        num_segments: Segments per sample (sequence length = num_segments * segment_size).
        steps: Optimizer steps in the stage. Exactly one of steps and tokens is set.
        tokens: Training tokens in the stage (global); the stage ends at the first step that
            reaches it.
        lr: Peak learning rate of the stage; None uses optimizer.lr.
        vary_n_segments: Draw each batch's number of segments uniformly from
            [min_segments, num_segments] (the RMT papers' vary_n_segments).
        min_segments: Lower end of the draw when vary_n_segments is on.
        advance: Optional early-advance rule checked at every evaluation.
    """

    num_segments: int = 1
    steps: int | None = None
    tokens: int | None = None
    lr: float | None = None
    vary_n_segments: bool = False
    min_segments: int = 1
    advance: AdvanceRule | None = None

    def __post_init__(self) -> None:
        _check(self.num_segments >= 1, f"stage num_segments must be >= 1, got {self.num_segments}")
        _check((self.steps is None) != (self.tokens is None),
               f"a stage needs exactly one of steps and tokens, got steps={self.steps} tokens={self.tokens}")
        _check(self.steps is None or self.steps > 0, f"stage steps must be positive, got {self.steps}")
        _check(self.tokens is None or self.tokens > 0, f"stage tokens must be positive, got {self.tokens}")
        _check(self.lr is None or self.lr > 0, f"stage lr must be positive, got {self.lr}")
        _check(1 <= self.min_segments <= self.num_segments,
               f"stage min_segments must be in [1, num_segments={self.num_segments}], got {self.min_segments}")

    @property
    def fewest_segments(self) -> int:
        """The fewest segments a batch of the stage has: min_segments when it varies them."""
        return self.min_segments if self.vary_n_segments else self.num_segments


def segments_range(fewest: int, most: int) -> str:
    """How plans and model cards show a stage's segments: "8", or "2-8" when they vary."""
    return str(most) if fewest == most else f"{fewest}-{most}"


@dataclass
class CurriculumConfig:
    """Stages run in order, each on longer inputs.

    Attributes:
        stages: The stages; at least one.
        stages_per_launch: Stop after finishing this many stages in one launch (a checkpoint is
            always written at a stage end); the next launch with `resume=auto` continues with
            the next stage. None runs all remaining stages. 1 gives the one-job-per-stage pattern.
    """

    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(num_segments=1, steps=100)])
    stages_per_launch: int | None = None

    def __post_init__(self) -> None:
        _check(len(self.stages) > 0, "curriculum.stages is empty; give at least one stage")
        _check(self.stages_per_launch is None or self.stages_per_launch > 0,
               f"curriculum.stages_per_launch must be positive or null, got {self.stages_per_launch}")



@dataclass
class ScheduleConfig:
    """Learning-rate schedule, restarted at every stage (as in the RMT curriculum).

    Attributes:
        kind: "constant", "linear" or "cosine" decay after warmup.
        warmup_steps: Linear warmup steps at the start of each stage.
        min_lr_ratio: Decay ends at this fraction of the stage's peak lr.
    """

    kind: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check(self.kind in ("constant", "linear", "cosine"),
               f"schedule.kind must be constant, linear or cosine, got {self.kind!r}")
        _check(self.warmup_steps >= 0, f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
