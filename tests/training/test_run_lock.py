"""A run writes only into its own directory, and only one launch at a time (issue 11, items 4, 5).

* A directory of the user's own files is refused in one line and left byte for byte as it was
  (a run used to overwrite config.yaml, trim metrics.jsonl and replace final/).
* A second launch on a directory in use stops at once, every rank of it, naming the holder; the
  lock goes with the holder's process however it ends (error, Ctrl-C, kill -9).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from rmt_scale.errors import ConfigError
from rmt_scale.training import loop
from rmt_scale.training.run_lock import MARKER, check_output_dir, claim
from tests.training.helpers import (
    error_lines,
    finish,
    keep_logging,
    start,
    train_cmd,
    train_in_process,
)


@pytest.fixture(autouse=True)
def _logging():
    yield from keep_logging()


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_directory_of_the_users_files_is_left_alone(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "final").mkdir(parents=True)
    (mine / "config.yaml").write_text("my: settings\n")
    (mine / "metrics.jsonl").write_text('{"step": 99, "kind": "train", "loss": 1.0}\n')
    (mine / "final" / "notes.txt").write_text("keep me\n")
    before = snapshot(mine)
    assert train_in_process(mine) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"output_dir {mine} holds files that rmt-scale did not write (config.yaml, " \
                                "final, metrics.jsonl)" in lines[0] and "choose a new or empty output_dir" in lines[0]
    assert snapshot(mine) == before and not (mine / MARKER).exists()


def test_which_directories_a_run_may_use(tmp_path):
    check_output_dir(tmp_path / "missing")
    check_output_dir(tmp_path)  # empty
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "a_file")
    with pytest.raises(ConfigError, match=r"holds files that rmt-scale did not write \(a_file\)"):
        check_output_dir(tmp_path)
    (tmp_path / MARKER).write_text("")
    check_output_dir(tmp_path)
    # A run directory of a release before the marker: recognised by a complete checkpoint.
    legacy = tmp_path / "legacy" / "checkpoints" / "checkpoint-000010"
    legacy.mkdir(parents=True)
    (legacy / "trainer_state.json").write_text("{}")
    (legacy / "complete").write_text("")
    check_output_dir(tmp_path / "legacy")


def test_one_launch_at_a_time(tmp_path):
    lock = claim(tmp_path / "run")
    assert (tmp_path / "run" / MARKER).is_file()
    with pytest.raises(ConfigError, match=rf"is in use by another launch \(held by host {socket.gethostname()}, "
                                          rf"pid {os.getpid()}, since .*\); wait for it to end"):
        claim(tmp_path / "run")
    lock.release()
    lock.release()  # twice is harmless
    claim(tmp_path / "run").release()
    assert (tmp_path / "run" / MARKER).read_text() == "not in use\n"


def test_the_lock_is_released_when_a_launch_stops(tmp_path, capsys, monkeypatch):
    def interrupted(self):
        assert self.run_lock is not None and self.run_lock.held
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Trainer, "fit", interrupted)
    assert train_in_process(tmp_path / "run") == 130
    assert "interrupted; resume with" in capsys.readouterr().err
    claim(tmp_path / "run").release()  # free again
    monkeypatch.undo()
    assert train_in_process(tmp_path / "run", "curriculum.stages.0.steps=2", "curriculum.stages.1.steps=2") == 0
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / MARKER).read_text() == "not in use\n"


HOLD = "import sys, time\nfrom rmt_scale.training.run_lock import claim\nlock = claim(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(600)\n"


@pytest.mark.distributed
@pytest.mark.slow
def test_a_second_launch_stops_at_once_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        code, output = finish(start(train_cmd(2, "tiny", [f"output_dir={run}", "logging.progress_bar=false"]),
                                    tmp_path), timeout=180)
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    lines = error_lines(output)
    assert code == 2 and len(lines) == 1, output[-4000:]
    assert f"is in use by another launch (held by host {socket.gethostname()}, pid {holder.pid}," in lines[0]
    assert "Traceback" not in output and not (run / "metrics.jsonl").exists()
    assert elapsed < 150  # both ranks exited; none waited for the other
    claim(run).release()  # the holder was killed (-9): the kernel dropped its lock
