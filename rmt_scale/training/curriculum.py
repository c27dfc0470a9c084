"""The curriculum, as pure functions of a small state: which stage, how many segments, what lr.

    stage 0: 1 segment, 200 steps   ->   stage 1: 2 segments, 200 steps   ->   ...
             (or until a validation metric is good enough: early advance)

Nothing here touches the model, the data or the RNG of the process. The number of segments of a
step and the order of samples depend only on (seed, stage, step), so every rank, and a run
resumed on another number of ranks, draws the same ones. `CurriculumState` is what a checkpoint
stores to continue exactly where a run stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from rmt_scale.errors import ConfigError
from rmt_scale.training.curriculum_config import ScheduleConfig, StageConfig


@dataclass(frozen=True)
class CurriculumState:
    """Where training stands.

    Attributes:
        stage: Index of the current stage; equals the number of stages once training is done.
        step_in_stage: Optimizer steps done in the current stage.
        tokens_in_stage: Training tokens (over all ranks) consumed in the current stage.
        samples_in_stage: Samples (over all ranks) consumed in the current stage: the data position.
        global_step: Optimizer steps done since the start of training.
    """

    stage: int = 0
    step_in_stage: int = 0
    tokens_in_stage: int = 0
    samples_in_stage: int = 0
    global_step: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> CurriculumState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in values.items() if k in known})


class Curriculum:
    """The stages of one run.

    Args:
        stages: The stage list of the config (already validated one by one).
        segment_size: Tokens per segment.
        seed: Run seed; draws of the number of segments and the sample order derive from it.
    """

    def __init__(self, stages: list[StageConfig], segment_size: int, seed: int):
        if not stages:
            raise ConfigError("curriculum.stages is empty; give at least one stage")
        self.stages = stages
        self.segment_size = segment_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.stages)

    def finished(self, state: CurriculumState) -> bool:
        return state.stage >= len(self.stages)

    def stage(self, state: CurriculumState) -> StageConfig:
        return self.stages[state.stage]

    def check_resumable(self, state: CurriculumState) -> None:
        """A saved state must fit this curriculum (a config edited between launches may not)."""
        if state.stage > len(self.stages):
            raise ConfigError(
                f"the checkpoint is at stage {state.stage} but curriculum.stages has only "
                f"{len(self.stages)} stages"
            )

    def num_segments(self, state: CurriculumState) -> int:
        """Segments per sample in the current step (drawn when the stage varies them)."""
        stage = self.stage(state)
        if stage.fewest_segments == stage.num_segments:
            return stage.num_segments
        generator = torch.Generator().manual_seed(_mix(self.seed, 7, state.stage, state.step_in_stage))
        span = stage.num_segments - stage.min_segments + 1
        return stage.min_segments + int(torch.randint(span, (1,), generator=generator))

    def stage_length_reached(self, state: CurriculumState) -> bool:
        """The current stage has done its steps (or tokens)."""
        stage = self.stage(state)
        if stage.steps is not None:
            return state.step_in_stage >= stage.steps
        return state.tokens_in_stage >= stage.tokens

    def stage_steps(self, stage_index: int, samples_per_step: int) -> int:
        """Length of a stage in steps; token-based stages are estimated from the tokens of a step
        at the mean number of segments (used for the schedule and the progress bar only)."""
        stage = self.stages[stage_index]
        if stage.steps is not None:
            return stage.steps
        mean_segments = (stage.fewest_segments + stage.num_segments) / 2
        per_step = samples_per_step * mean_segments * self.segment_size
        return max(1, math.ceil(stage.tokens / per_step))

    def after_step(self, state: CurriculumState, samples: int, tokens: int) -> CurriculumState:
        """The state after one optimizer step over `samples` samples of `tokens` tokens."""
        return CurriculumState(
            stage=state.stage,
            step_in_stage=state.step_in_stage + 1,
            tokens_in_stage=state.tokens_in_stage + tokens,
            samples_in_stage=state.samples_in_stage + samples,
            global_step=state.global_step + 1,
        )

    def next_stage(self, state: CurriculumState) -> CurriculumState:
        """The state at the start of the following stage (past the end when it was the last)."""
        return CurriculumState(stage=state.stage + 1, global_step=state.global_step)

    def should_advance_early(self, state: CurriculumState, metrics: dict[str, float]) -> bool:
        """The stage's early-advance rule holds for these validation metrics."""
        rule = self.stage(state).advance
        if rule is None or state.step_in_stage < rule.min_steps:
            return False
        return rule.reached(metrics)

    def learning_rate(self, state: CurriculumState, base_lr: float, schedule: ScheduleConfig,
                      samples_per_step: int) -> float:
        """Learning rate of the next step: warmup, then decay, restarted at every stage."""
        stage = self.stage(state)
        peak = stage.lr if stage.lr is not None else base_lr
        return peak * schedule_factor(state.step_in_stage, self.stage_steps(state.stage, samples_per_step), schedule)

    def sample_indices(self, state: CurriculumState, count: int, num_samples: int) -> list[int]:
        """Dataset indices of the next `count` samples of the current stage.

        The stage reads its data in epochs, each a fresh permutation drawn from (seed, stage,
        epoch); position `samples_in_stage` in that endless sequence is where it stands.
        """
        return sample_order(self.seed, state.stage, state.samples_in_stage, count, num_samples)


def schedule_factor(step: int, total_steps: int, schedule: ScheduleConfig) -> float:
    """Multiplier of the peak lr at `step` of a stage of `total_steps` steps."""
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    if schedule.kind == "constant":
        return 1.0
    decay_steps = max(1, total_steps - schedule.warmup_steps)
    progress = min(1.0, (step - schedule.warmup_steps) / decay_steps)
    low = schedule.min_lr_ratio
    if schedule.kind == "linear":
        return low + (1.0 - low) * (1.0 - progress)
    return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def sample_order(seed: int, stage: int, start: int, count: int, num_samples: int) -> list[int]:
    """Positions [start, start + count) of the stage's endless shuffled sequence of indices."""
    if num_samples <= 0:
        raise ValueError("the dataset is empty")
    indices: list[int] = []
    position = start
    cached_epoch, permutation = -1, None
    while len(indices) < count:
        epoch, offset = divmod(position, num_samples)
        if epoch != cached_epoch:
            generator = torch.Generator().manual_seed(_mix(seed, 11, stage, epoch))
            permutation = torch.randperm(num_samples, generator=generator).tolist()
            cached_epoch = epoch
        take = min(count - len(indices), num_samples - offset)
        indices.extend(permutation[offset : offset + take])
        position += take
    return indices


def _mix(*values: int) -> int:
    """A deterministic 63-bit seed from small integers (not Python's salted hash)."""
    result = 0x9E3779B97F4A7C15
    for value in values:
        result = (result ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        result ^= result >> 31
    return result & 0x7FFFFFFFFFFFFFFF


def step_seed(seed: int, global_step: int, rank: int) -> int:
    """Seed of the process RNG for one step on one rank (dropout): a function of the trainer
    state, so a resumed run draws exactly what an uninterrupted one would."""
    return _mix(seed, 13, global_step, rank)
