"""What a run reports: one W&B run per run directory, whatever the number of launches."""

from __future__ import annotations

import sys
import types

import pytest

from rmt_scale.training.config import LoggingConfig
from rmt_scale.training.metrics import RunLogger, read_metrics
from rmt_scale.training.run_dir import WANDB_RUN_ID


@pytest.fixture
def fake_wandb(monkeypatch):
    """A wandb module that records every init (wandb is not installed here)."""
    module = types.ModuleType("wandb")
    module.inits = []

    class Run:
        def __init__(self):
            self.logged = []

        def log(self, values, step):
            self.logged.append((step, values))

        def finish(self):
            pass

    def init(**kwargs):
        module.inits.append(kwargs)
        return Run()

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def launch(output_dir):
    """One launch's logger, as rank 0 builds it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = LoggingConfig(wandb=True, tensorboard=False, progress_bar=False, wandb_project="p")
    logger = RunLogger(output_dir, settings, enabled=True, run_config={"seed": 0})
    logger.log({"step": 1, "loss": 2.5}, "train")
    logger.close()
    return logger


def test_every_launch_of_a_run_continues_one_wandb_run(fake_wandb, tmp_path):
    first = launch(tmp_path / "run")
    run_id = (tmp_path / "run" / WANDB_RUN_ID).read_text().strip()
    assert run_id and first.wandb.logged == [(1, {"train/loss": 2.5})]
    launch(tmp_path / "run")  # a resume, or the next stage's job
    launch(tmp_path / "other")  # another run
    ids = [call["id"] for call in fake_wandb.inits]
    assert ids[0] == ids[1] == run_id and ids[2] != run_id
    assert all(call["resume"] == "allow" and call["project"] == "p" for call in fake_wandb.inits)
    assert len(read_metrics(tmp_path / "run", "train")) == 2


def test_without_wandb_no_id_is_written(tmp_path):
    (tmp_path / "run").mkdir()
    RunLogger(tmp_path / "run", LoggingConfig(tensorboard=False, progress_bar=False), True, {}).close()
    assert not (tmp_path / "run" / WANDB_RUN_ID).exists()
