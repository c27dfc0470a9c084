"""A NaN is never reported, exported or trained on as if it were a number (issue 11, item 7).

Before: validation turned a NaN loss into 0.0 (so a loss-based advance rule advanced), a NaN
training loss was a warning and the run exited 0 with NaN weights in final/, and optimizer.lr=.inf
passed validation. Now a non-finite config value is a ConfigError, a non-finite training loss
stops the run in one line before anything of that step is saved (or, with nonfinite=skip, the step
is dropped and counted), validation reports NaN as NaN and never advances on it, and export
refuses non-finite weights.

The NaN is injected into the model's output on chosen forward passes (in-process, one rank).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from rmt_scale.errors import CheckpointError, ConfigError
from rmt_scale.export.adapter import load_trainable
from rmt_scale.model.recurrent import RecurrentMemoryModel
from rmt_scale.resources import DEEPSPEED_DIR
from rmt_scale.training.build import build_model
from rmt_scale.training.config import load_train_config
from tests.training.helpers import (
    error_lines,
    final_weights,
    keep_logging,
    metrics,
    train_in_process,
)


@pytest.fixture(autouse=True)
def _logging():
    yield from keep_logging()


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=.inf", "optimizer.lr"),
    ("optimizer.weight_decay=.nan", "optimizer.weight_decay"),
    ("optimizer.betas=[0.9, -.inf]", "optimizer.betas.1"),
    ("curriculum.stages.0.lr=inf", "curriculum.stages.0.lr"),
    ("rmt.memory_init_std=nan", "rmt.memory_init_std"),
])
def test_non_finite_config_values_are_errors(override, key):
    with pytest.raises(ConfigError, match=rf"{key} must be a finite number, got"):
        load_train_config("tiny", [override])


def test_an_infinite_learning_rate_stops_before_training(tmp_path, capsys):
    assert train_in_process(tmp_path / "run", "optimizer.lr=.inf") == 2
    assert error_lines(capsys.readouterr().err) == ["error: optimizer.lr must be a finite number, got inf"]
    assert not (tmp_path / "run").exists()


@pytest.fixture
def nan_at(monkeypatch):
    """nan_at(mode, calls): make the loss NaN on those forward passes in "train" or "eval" mode
    (1-based, counted per mode)."""
    forward = RecurrentMemoryModel.forward
    counts = {"train": 0, "eval": 0}
    poisoned: dict[str, set[int]] = {"train": set(), "eval": set()}

    def poisoning(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        mode = "train" if self.training else "eval"
        counts[mode] += 1
        if counts[mode] in poisoned[mode]:
            out.loss = out.loss * float("nan")
            if out.sample_loss is not None:
                out.sample_loss = out.sample_loss * float("nan")
        return out

    monkeypatch.setattr(RecurrentMemoryModel, "forward", poisoning)

    def choose(mode: str, calls: set[int]) -> None:
        poisoned[mode] = calls

    return choose


# Two micro-batches per step (QUICK: global batch 4 = 2 x 2 accumulation on one rank): forward
# passes 5 and 6 are step 3, the one after checkpoint-000002.
STEP_3 = {5}


def test_a_nan_training_loss_stops_the_run(tmp_path, capsys, nan_at):
    nan_at("train", STEP_3)
    run = tmp_path / "run"
    assert train_in_process(run) == 2
    lines = error_lines(capsys.readouterr().err)
    assert lines == ["error: step 3: the training loss is nan; nothing after checkpoint-000002 is saved or "
                     "exported: lower optimizer.lr (or the stage's lr) or check the data, then launch again "
                     "(resume=auto continues from there), or set nonfinite=skip"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-000002"]
    assert not (run / "final").exists() and [r["step"] for r in metrics(run)] == [1, 2]


def test_nonfinite_skip_drops_the_step_and_counts_it(tmp_path, capsys, nan_at):
    nan_at("train", STEP_3)
    run = tmp_path / "run"
    assert train_in_process(run, "nonfinite=skip") == 0
    assert "step 3: loss is nan; the step was skipped (nonfinite=skip; 1 skipped in all)" in capsys.readouterr().err
    records = {r["step"]: r for r in metrics(run)}
    assert math.isnan(records[3]["loss"]) and records[3]["skipped_steps"] == 1 and records[8]["skipped_steps"] == 1
    assert "skipped_steps" not in records[2]
    state = json.loads((run / "final" / "trainer_state.json").read_text())
    assert state["skipped_steps"] == 1
    assert all(torch.isfinite(w).all() for w in final_weights(run).values())


def test_nonfinite_skip_without_an_optimizer_that_discards_the_step_stops(tmp_path, capsys, nan_at):
    ds = json.loads((DEEPSPEED_DIR / "zero2.json").read_text())
    ds["zero_optimization"] = {"stage": 0}  # plain AdamW: it would apply NaN gradients
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    nan_at("train", STEP_3)
    assert train_in_process(tmp_path / "run", "nonfinite=skip", f"deepspeed={tmp_path / 'ds.json'}") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: step 3: the training loss is nan and the optimizer applied the step "
                           "(nonfinite=skip needs ZeRO stage 1-3")
    assert not (tmp_path / "run" / "final").exists()


def test_a_nan_validation_loss_is_reported_and_never_advances(tmp_path, nan_at):
    # Every validation pass of stage 1 is NaN; its rule would advance on any loss <= 100.
    nan_at("eval", set(range(1, 100)))
    run = tmp_path / "run"
    assert train_in_process(run, "eval.every_steps=1",
                            "curriculum.stages.0.advance={metric: loss, threshold: 100.0, min_steps: 1}") == 0
    evals = [r for r in metrics(run, "eval") if r["stage"] == 0]
    assert [r["step"] for r in evals] == [1, 2, 3, 4]  # no early advance: all 4 steps of stage 1
    assert all(math.isnan(r["loss"]) for r in evals)


def test_export_refuses_non_finite_weights(tmp_path):
    model = build_model(load_train_config("tiny"), "fp32")
    weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    name = sorted(weights)[0]
    weights[name][0] = float("inf")
    with pytest.raises(CheckpointError, match=rf"{name} holds NaN or infinite values \(the training diverged\)"):
        load_trainable(model, weights, tmp_path)
