"""A full disk during a checkpoint save is one line, and the earlier checkpoint stays intact (issue
11, item 12). Before: a traceback ending in torch's "unexpected pos ..." from its zip writer.

The disk fills up (simulated) at the second checkpoint, in DeepSpeed's writes (as an OSError, or as
the RuntimeError torch raises when a write comes up short) or in rank 0's own files after them.
"""

from __future__ import annotations

import errno

import pytest
import torch

from rmt_scale.training import run_dir
from tests.training.helpers import error_lines, keep_logging, metrics, train_in_process

FULL = "checkpoint-000004"


@pytest.fixture(autouse=True)
def _logging():
    yield from keep_logging()


def disk_full_in_torch_save(kind: str):
    save = torch.save

    def failing(obj, path, *args, **kwargs):
        if FULL in str(path):
            if kind == "oserror":
                raise OSError(errno.ENOSPC, "No space left on device")
            # What torch's zip writer says when the file system takes fewer bytes than it wrote.
            raise RuntimeError("[enforce fail at inline_container.cc:659] . unexpected pos 1536 vs 1429")
        return save(obj, path, *args, **kwargs)

    return torch, "save", failing


def disk_full_in_the_trainer_state():
    write = run_dir._write_synced

    def failing(path, text):
        if FULL in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, text)

    return run_dir, "_write_synced", failing


@pytest.mark.parametrize("where", ["oserror", "unexpected-pos", "trainer-state"])
def test_disk_full_during_a_save(tmp_path, capsys, monkeypatch, where):
    target = disk_full_in_the_trainer_state() if where == "trainer-state" else disk_full_in_torch_save(where)
    monkeypatch.setattr(*target)
    run = tmp_path / "run"
    assert train_in_process(run) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"error: disk full while saving {run / 'checkpoints' / FULL}")
    assert lines[0].endswith("; free space and resume (resume=auto continues from checkpoint-000002, "
                             "which is intact)")
    # The earlier checkpoint is complete and passes its manifest; nothing of the failed save is left.
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-000002"]
    run_dir.verify_checkpoint(run / "checkpoints" / "checkpoint-000002")
    monkeypatch.undo()  # space freed
    assert train_in_process(run) == 0
    assert [r["step"] for r in metrics(run)] == list(range(1, 9))
