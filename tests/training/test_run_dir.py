"""Checkpoint directories: atomic completion, resume=auto picks the newest complete one."""

from __future__ import annotations

import json

import pytest

from rmt_scale.errors import CheckpointError, ConfigError
from rmt_scale.training.run_dir import (
    TRAINER_STATE_VERSION,
    checkpoint_paths,
    complete_checkpoints,
    finish_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    read_trainer_state,
    resolve_resume,
    start_checkpoint,
    truncate_metrics,
    verify_checkpoint,
    write_manifest,
)


def save(output_dir, step):
    start_checkpoint(output_dir, step)
    tmp, final = checkpoint_paths(output_dir, step)
    (tmp / "deepspeed").mkdir(parents=True)
    finish_checkpoint(tmp, final, {"curriculum": {"global_step": step}}, "seed: 0\n")
    return final


def test_partial_checkpoints_are_ignored(tmp_path):
    assert latest_checkpoint(tmp_path) is None and resolve_resume("auto", tmp_path) is None
    save(tmp_path, 5)
    newest = save(tmp_path, 10)
    # A save killed half-way: only the temporary dir, or renamed but not yet marked complete.
    tmp, _ = checkpoint_paths(tmp_path, 15)
    (tmp / "deepspeed").mkdir(parents=True)
    unmarked = save(tmp_path, 20)
    (unmarked / "complete").unlink()
    assert latest_checkpoint(tmp_path) == newest
    assert resolve_resume("auto", tmp_path) == newest
    assert json.loads((newest / "trainer_state.json").read_text())["curriculum"]["global_step"] == 10
    # The next save at that step clears the stale temporary dir.
    save(tmp_path, 15)
    assert not tmp.exists() and latest_checkpoint(tmp_path).name == "checkpoint-000015"


def test_resume_paths(tmp_path):
    final = save(tmp_path, 3)
    assert resolve_resume(str(final), tmp_path) == final
    assert resolve_resume("none", tmp_path) is None
    with pytest.raises(ConfigError, match="no such checkpoint directory"):
        resolve_resume(str(tmp_path / "missing"), tmp_path)
    (final / "complete").unlink()
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resolve_resume(str(final), tmp_path)


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        save(tmp_path, step)
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-000003", "checkpoint-000004"]
    prune_checkpoints(tmp_path, keep_last=0)
    assert len(complete_checkpoints(tmp_path)) == 2


def test_truncate_metrics_drops_records_after_the_checkpoint(tmp_path):
    lines = [json.dumps({"kind": "train", "step": s}) for s in range(1, 6)] + ['{"kind": "tr']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    truncate_metrics(tmp_path, 3)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_trainer_state_version_is_written_and_checked(tmp_path):
    final = save(tmp_path, 7)
    state = read_trainer_state(final)
    assert state["version"] == TRAINER_STATE_VERSION and state["curriculum"]["global_step"] == 7
    (final / "trainer_state.json").write_text(json.dumps({**state, "version": TRAINER_STATE_VERSION + 1}))
    with pytest.raises(CheckpointError, match="newer than this rmt-scale reads"):
        read_trainer_state(final)
    (final / "trainer_state.json").write_text("{cut")
    with pytest.raises(CheckpointError, match="unreadable trainer state"):
        read_trainer_state(final)


def test_manifest_catches_files_damaged_after_the_save(tmp_path):
    checkpoint = save(tmp_path, 3)
    (checkpoint / "deepspeed" / "weights.pt").write_bytes(b"1234")
    write_manifest(checkpoint)  # the save wrote it last, over every file
    verify_checkpoint(checkpoint)
    (checkpoint / "deepspeed" / "weights.pt").write_bytes(b"1235")  # same size, other bytes
    with pytest.raises(CheckpointError, match="deepspeed/weights.pt does not match its checksum"):
        verify_checkpoint(checkpoint)
    (checkpoint / "deepspeed" / "weights.pt").write_bytes(b"12")
    with pytest.raises(CheckpointError, match="weights.pt is 2 bytes, the manifest says 4"):
        verify_checkpoint(checkpoint)
    (checkpoint / "deepspeed" / "weights.pt").unlink()
    with pytest.raises(CheckpointError, match="deepspeed/weights.pt is missing"):
        verify_checkpoint(checkpoint)
    (checkpoint / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        verify_checkpoint(checkpoint)
    # Written before manifests existed (the trainer state does not announce one): read without one.
    state = read_trainer_state(checkpoint)
    assert state["manifest"] == "manifest.json"
    del state["manifest"]
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    verify_checkpoint(checkpoint)


def test_resume_auto_falls_back_past_a_damaged_checkpoint(tmp_path, caplog):
    older, newest = save(tmp_path, 5), save(tmp_path, 10)
    (newest / "config.yaml").write_text("seed: 2\n")
    assert resolve_resume("auto", tmp_path) == older
    assert "checkpoint-000010: config.yaml does not match its checksum" in caplog.text
    assert "resuming from checkpoint-000005 instead of the newest checkpoint" in caplog.text
    with pytest.raises(CheckpointError, match="resume from an earlier checkpoint"):
        resolve_resume(str(newest), tmp_path)
    (older / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"checkpoint-000010: config.yaml .* \(and the 1 earlier one\(s\) "
                                              r"fail too\); no usable checkpoint is left"):
        resolve_resume("auto", tmp_path)
