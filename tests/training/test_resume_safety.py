"""Resume never runs code from a checkpoint and never loads a damaged one (issue 11, items 1 and 10).

A crafted torch file (tests/security_fixtures.py: unpickling it writes a marker file) is put into a
real run's checkpoint, with the checkpoint's manifest rewritten to match, as a careful attacker
would. Resume refuses it in one line before any rank loads anything (the pre-flight check), and
DeepSpeed's own loading and universal conversion refuse it too when that check is skipped: the
marker never appears. A checkpoint damaged after its save fails its manifest; resume=auto falls
back to the previous complete checkpoint and says so, and so does export.

All runs are in-process on one rank (tests/training/helpers.py: QUICK), a few seconds each.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rmt_scale.errors import CheckpointError
from rmt_scale.export.adapter import export_checkpoint
from rmt_scale.training import plan as plan_module
from rmt_scale.training import run_dir
from tests.security_fixtures import write_crafted_pickle
from tests.training.helpers import STAGE_ONE, error_lines, keep_logging, metrics, train_in_process

MODEL_FILE = "mp_rank_00_model_states.pt"
OPTIM_FILE = "zero_pp_rank_0_mp_rank_00_optim_states.pt"
# Resuming with another ZeRO stage goes through DeepSpeed's universal conversion (as another
# number of ranks does), without starting a second rank.
UNIVERSAL = "deepspeed=zero1"


@pytest.fixture(autouse=True)
def _logging():
    yield from keep_logging()


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    """A run stopped after stage 1: checkpoint-000002 and checkpoint-000004."""
    root = tmp_path_factory.mktemp("stage-one")
    restore = keep_logging()
    next(restore)
    assert train_in_process(root / "run", *STAGE_ONE) == 0
    next(restore, None)
    return root / "run"


@pytest.fixture
def run(stage_one, tmp_path):
    shutil.copytree(stage_one, tmp_path / "run")
    return tmp_path / "run"


def checkpoint(run, step: int):
    return run_dir.checkpoint_root(run) / run_dir.checkpoint_name(step)


def craft(path, marker):
    """Replace `path` with a crafted pickle and fix the checkpoint's manifest to match."""
    write_crafted_pickle(path, marker, module={}, optimizer_state_dict={})
    ckpt = next(parent for parent in path.parents if parent.name.startswith("checkpoint-"))
    run_dir.write_manifest(ckpt)


def fails_in_one_line(run, capsys, *overrides) -> str:
    assert train_in_process(run, *overrides) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_the_crafted_file_is_live(tmp_path):
    """Without weights_only the fixture does run its code: the tests below could fail."""
    path = write_crafted_pickle(tmp_path / "x.pt", tmp_path / "marker")
    torch.load(path, weights_only=False)
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("extra", [[], [UNIVERSAL]], ids=["same-layout", "universal"])
@pytest.mark.parametrize("name", [MODEL_FILE, OPTIM_FILE])
def test_crafted_checkpoint_files_are_refused_before_loading(run, tmp_path, capsys, name, extra):
    marker = tmp_path / "code-ran"
    for step in (2, 4):
        craft(checkpoint(run, step) / "deepspeed" / name, marker)
    line = fails_in_one_line(run, capsys, *extra)
    assert "unsafe to load (Unsupported global" in line and "no usable checkpoint is left" in line, line
    assert not marker.exists()
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]  # nothing trained, nothing trimmed


@pytest.mark.parametrize("name, extra", [(MODEL_FILE, []), (OPTIM_FILE, []), (MODEL_FILE, [UNIVERSAL]),
                                         (OPTIM_FILE, [UNIVERSAL])],
                         ids=["model-engine", "optim-engine", "model-conversion", "optim-conversion"])
def test_deepspeed_loading_itself_is_safe(run, tmp_path, capsys, monkeypatch, name, extra):
    """With the pre-flight check skipped, the crafted file reaches DeepSpeed's engine.load_checkpoint
    (or its universal conversion): it must refuse it the same way."""
    monkeypatch.setattr(plan_module, "check_checkpoint", lambda path: None)
    marker = tmp_path / "code-ran"
    craft(checkpoint(run, 4) / "deepspeed" / name, marker)
    line = fails_in_one_line(run, capsys, *extra)
    assert name in line and "unsafe to load (Unsupported global" in line, line
    assert not marker.exists()


def plant_in_universal(run, marker):
    """A universal/ directory from an earlier conversion, with one file replaced by a crafted one."""
    from rmt_scale import distributed

    newest = checkpoint(run, 4)
    distributed.prepare_universal(newest)  # what a resume on other ranks leaves behind
    write_crafted_pickle(sorted((newest / "universal").rglob("fp32.pt"))[0], marker)


def test_a_planted_universal_file_is_refused(run, tmp_path, capsys):
    """universal/ is loaded as it is found: its files go through the same pre-flight check."""
    marker = tmp_path / "code-ran"
    plant_in_universal(run, marker)
    assert train_in_process(run, UNIVERSAL) == 0
    err = capsys.readouterr().err
    assert "fp32.pt: unreadable, truncated or unsafe to load" in err, err[-3000:]
    assert "resuming from checkpoint-000002 instead" in err
    assert not marker.exists()


def test_deepspeed_universal_loading_itself_is_safe(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plan_module, "check_checkpoint", lambda path: None)
    marker = tmp_path / "code-ran"
    plant_in_universal(run, marker)
    line = fails_in_one_line(run, capsys, UNIVERSAL)
    assert "fp32.pt: unreadable, truncated or unsafe to load (Unsupported global" in line, line
    assert not marker.exists()


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(run, capsys):
    damaged = checkpoint(run, 4) / "deepspeed" / OPTIM_FILE
    size = damaged.stat().st_size
    damaged.write_bytes(damaged.read_bytes()[: size // 2])  # cut short, after the save
    assert train_in_process(run) == 0
    err = capsys.readouterr().err
    assert (f"checkpoint-000004: deepspeed/{OPTIM_FILE} is {size // 2} bytes, the manifest says {size}"
            in err), err[-3000:]
    assert "resuming from checkpoint-000002 instead of the newest checkpoint" in err
    assert "resumed from" in err and (run / "final" / "adapter_model.safetensors").is_file()
    assert [r["step"] for r in metrics(run)] == list(range(1, 9))  # steps 3-4 trained again, not doubled


def test_a_damaged_only_checkpoint_is_one_line(run, capsys):
    shutil.rmtree(checkpoint(run, 2))
    (checkpoint(run, 4) / "config.yaml").write_text("seed: 1\n")  # changed after the save
    line = fails_in_one_line(run, capsys)
    assert "checkpoint-000004: config.yaml is" in line and "no usable checkpoint is left" in line, line


def test_resume_from_a_named_damaged_checkpoint_is_refused(run, capsys):
    (checkpoint(run, 4) / run_dir.MANIFEST).unlink()
    line = fails_in_one_line(run, capsys, f"resume={checkpoint(run, 4)}")
    assert "manifest.json is missing" in line and "resume from an earlier checkpoint" in line, line


def test_export_verifies_the_manifest_too(run, tmp_path, caplog):
    (checkpoint(run, 4) / "deepspeed" / MODEL_FILE).write_bytes(b"\0" * 64)
    assert export_checkpoint(run, tmp_path / "adapter") == checkpoint(run, 2)
    assert "falling back to the previous complete checkpoint" in caplog.text
    with pytest.raises(CheckpointError, match="the manifest says"):
        export_checkpoint(checkpoint(run, 4), tmp_path / "other")
    assert json.loads((tmp_path / "adapter" / "trainer_state.json").read_text())["curriculum"]["global_step"] == 2
