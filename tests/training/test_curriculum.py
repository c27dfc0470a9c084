"""The curriculum: pure functions of (stages, seed, state)."""

from __future__ import annotations

import pytest

from rmt_scale.errors import ConfigError
from rmt_scale.training.config import AdvanceRule, ScheduleConfig, StageConfig
from rmt_scale.training.curriculum import Curriculum, CurriculumState, sample_order, schedule_factor


def stages():
    return [StageConfig(num_segments=1, steps=3),
            StageConfig(num_segments=4, tokens=1000, vary_n_segments=True, min_segments=2, lr=0.5,
                        advance=AdvanceRule(metric="accuracy", threshold=0.9, min_steps=2))]


def test_steps_stage_then_tokens_stage():
    curriculum = Curriculum(stages(), segment_size=10, seed=0)
    state = CurriculumState()
    for _ in range(3):
        assert not curriculum.stage_length_reached(state)
        state = curriculum.after_step(state, samples=4, tokens=40)
    assert curriculum.stage_length_reached(state)
    assert state == CurriculumState(stage=0, step_in_stage=3, tokens_in_stage=120, samples_in_stage=12, global_step=3)
    state = curriculum.next_stage(state)
    assert state == CurriculumState(stage=1, global_step=3)
    while not curriculum.stage_length_reached(state):
        state = curriculum.after_step(state, samples=4, tokens=150)
    assert state.tokens_in_stage >= 1000 and state.step_in_stage == 7
    state = curriculum.next_stage(state)
    assert curriculum.finished(state) and state.global_step == 10


def test_num_segments_is_drawn_deterministically_within_bounds():
    curriculum = Curriculum(stages(), segment_size=10, seed=0)
    assert curriculum.num_segments(CurriculumState(stage=0)) == 1
    draws = [curriculum.num_segments(CurriculumState(stage=1, step_in_stage=k)) for k in range(200)]
    assert set(draws) == {2, 3, 4}
    again = [Curriculum(stages(), 10, seed=0).num_segments(CurriculumState(stage=1, step_in_stage=k)) for k in range(200)]
    assert draws == again
    other = [Curriculum(stages(), 10, seed=1).num_segments(CurriculumState(stage=1, step_in_stage=k)) for k in range(200)]
    assert draws != other


def test_early_advance_respects_min_steps_and_direction():
    curriculum = Curriculum(stages(), segment_size=10, seed=0)
    assert not curriculum.should_advance_early(CurriculumState(stage=0, step_in_stage=2), {"accuracy": 1.0, "loss": 0.0})
    assert not curriculum.should_advance_early(CurriculumState(stage=1, step_in_stage=1), {"accuracy": 1.0, "loss": 0.0})
    assert curriculum.should_advance_early(CurriculumState(stage=1, step_in_stage=2), {"accuracy": 0.9, "loss": 9.0})
    assert not curriculum.should_advance_early(CurriculumState(stage=1, step_in_stage=5), {"accuracy": 0.5, "loss": 0.0})
    assert AdvanceRule(metric="loss", threshold=0.5).reached({"loss": 0.4})
    assert not AdvanceRule(metric="loss", threshold=0.5).reached({"loss": 0.6})


def test_learning_rate_restarts_every_stage():
    curriculum = Curriculum(stages(), segment_size=10, seed=0)
    schedule = ScheduleConfig(kind="linear", warmup_steps=1, min_lr_ratio=0.0)
    first = [curriculum.learning_rate(CurriculumState(stage=0, step_in_stage=k), 1.0, schedule, 4) for k in range(3)]
    assert first == pytest.approx([1.0, 1.0, 0.5])
    assert curriculum.learning_rate(CurriculumState(stage=1), 1.0, schedule, 4) == pytest.approx(0.5)  # stage lr, warmup
    assert schedule_factor(5, 10, ScheduleConfig(kind="cosine", min_lr_ratio=0.2)) == pytest.approx(0.6)
    assert schedule_factor(50, 10, ScheduleConfig(kind="cosine", min_lr_ratio=0.2)) == pytest.approx(0.2)
    assert schedule_factor(7, 10, ScheduleConfig(kind="constant")) == 1.0


def test_token_stage_length_estimate():
    curriculum = Curriculum(stages(), segment_size=10, seed=0)
    assert curriculum.stage_steps(0, 4) == 3
    assert curriculum.stage_steps(1, 4) == 9  # 1000 / (4 samples x 3 segments on average x 10)


def test_sample_order_is_a_permutation_per_epoch_and_resumable():
    whole = sample_order(seed=3, stage=1, start=0, count=25, num_samples=10)
    assert sorted(whole[:10]) == list(range(10)) and sorted(whole[10:20]) == list(range(10))
    assert whole[:10] != whole[10:20]
    assert sample_order(3, 1, 7, 11, 10) == whole[7:18]  # a resumed position reads the same samples
    assert sample_order(3, 2, 0, 10, 10) != whole[:10]  # another stage, another order
    with pytest.raises(ValueError):
        sample_order(0, 0, 0, 1, 0)


def test_state_round_trip_and_resume_checks():
    state = CurriculumState(stage=1, step_in_stage=2, tokens_in_stage=30, samples_in_stage=8, global_step=5)
    assert CurriculumState.from_dict(state.to_dict()) == state
    curriculum = Curriculum(stages(), segment_size=10, seed=0)
    curriculum.check_resumable(CurriculumState(stage=2))  # finished is fine
    with pytest.raises(ConfigError, match="only 2 stages"):
        curriculum.check_resumable(CurriculumState(stage=3))
    with pytest.raises(ConfigError, match="empty"):
        Curriculum([], 10, 0)
