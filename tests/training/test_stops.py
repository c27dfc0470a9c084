"""A run on 2 CPU ranks ends cleanly however it is stopped (issue 11, item 11 and Ctrl-C).

* One rank stopped (SIGSTOP) mid-run: the other gives up after dist_timeout_minutes and exits with
  one line. Before, with a 1-minute timeout it still waited after 4.5 minutes: DeepSpeed's
  collectives run on groups it creates, which got torch's 30-minute default.
* Ctrl-C to `rmt-scale train` while rank 0 waits in a collective (rank 1 is held with SIGSTOP, so
  the moment is certain): every process ends and the command prints one line, how to resume.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.training.helpers import (
    TINY,
    deepspeed_cmd,
    error_lines,
    finish,
    start,
    train_cmd,
    wait_for,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LONG = ["curriculum.stages.0.steps=5000", "logging.every_steps=1", "logging.progress_bar=false",
        "logging.tensorboard=false", "eval.every_steps=0", "checkpoint.every_steps=0"]


def rank_process(launcher_pid: int, local_rank: int) -> psutil.Process:
    for child in psutil.Process(launcher_pid).children(recursive=True):
        if f"--local_rank={local_rank}" in child.cmdline():
            return child
    raise AssertionError(f"no process for local rank {local_rank}")


def training(run_dir, steps: int = 3):
    def started() -> bool:
        path = run_dir / "metrics.jsonl"
        return path.is_file() and len(path.read_text().splitlines()) >= steps
    return started


def test_a_stopped_rank_does_not_hang_the_others(tmp_path):
    run = tmp_path / "run"
    proc = start(deepspeed_cmd(2, TINY, [*LONG, f"output_dir={run}", "dist_timeout_minutes=0.1"]), tmp_path)
    try:
        wait_for(training(run), proc, timeout=240)
        rank0, rank1 = rank_process(proc.pid, 0), rank_process(proc.pid, 1)
        rank1.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        rank0.wait(timeout=90)
        waited = time.monotonic() - stopped
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher would give the stopped rank 30 s more
    _, output = finish(proc)
    assert waited < 60, f"rank 0 waited {waited:.0f} s past a 6 s timeout"  # start-up of the error path included
    assert error_lines(output) == ["error: rank 0: no answer from another rank within dist_timeout_minutes=0.1 "
                                   "(a rank is stopped, hung or slower than that); end the run and launch again "
                                   "with resume=auto, raising dist_timeout_minutes if a step or checkpoint "
                                   "legitimately takes longer"], output[-4000:]
    assert "Traceback" not in output


def test_ctrl_c_while_a_rank_waits_in_a_collective(tmp_path):
    run = tmp_path / "run"
    proc = start(train_cmd(2, "tiny", [*LONG, f"output_dir={run}"]), tmp_path)
    try:
        wait_for(training(run), proc, timeout=240)
        rank1 = rank_process(proc.pid, 1)
        rank1.send_signal(signal.SIGSTOP)
        time.sleep(1)  # rank 0 is now waiting for rank 1 inside a collective
        proc.send_signal(signal.SIGINT)  # a Ctrl-C in the terminal reaches `rmt-scale train` alone
        time.sleep(1)
        rank1.send_signal(signal.SIGCONT)
        code, output = finish(proc, timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert code == 130, output[-4000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1] == f"interrupted; resume with: rmt-scale train --config tiny {' '.join(LONG)} " \
                        f"output_dir={run} (resume=auto)", output[-4000:]
    assert sum("interrupted" in line for line in lines) == 1 and "Traceback" not in output, output[-4000:]
    assert not error_lines(output)
