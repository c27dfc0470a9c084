"""Running training in subprocesses: `rmt-scale train`, `deepspeed launch/train.py`, two "nodes"."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "launch" / "train.py"
TINY = REPO / "launch" / "configs" / "tiny.yaml"
TIMEOUT_S = 300

# The tiny recipe, shortened: 2 stages x 20 steps, a checkpoint every 5 steps, global batch 8
# (2 per rank x 2 ranks x 2 accumulation, or x 4 accumulation on one rank).
SHORT = [
    "curriculum.stages.0.steps=20",
    "curriculum.stages.1.steps=20",
    "curriculum.stages.1.advance=null",
    "checkpoint.every_steps=5",
    "checkpoint.keep_last=0",
    "batch.micro_batch_size=2",
    "batch.global_batch_size=8",
    "eval.every_steps=10",
    "data.valid_samples=8",
    "logging.every_steps=1",
    "logging.progress_bar=false",
]


def env() -> dict:
    values = dict(os.environ)
    values.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", TOKENIZERS_PARALLELISM="false",
                  PYTHONUNBUFFERED="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        values.pop(key, None)
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python_cmd(config: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, str(TRAIN), "--config", str(config), *overrides]


def train_cmd(num_ranks: int, config: str, overrides: list[str]) -> list[str]:
    """`rmt-scale train` (the installed form: works from any directory)."""
    return [sys.executable, "-m", "rmt_scale.cli.main", "train", "--config", config, "--num-gpus", str(num_ranks),
            "--master-port", str(free_port()), *overrides]


def deepspeed_cmd(num_ranks: int, config: Path, overrides: list[str], extra: list[str] = ()) -> list[str]:
    """`deepspeed launch/train.py` (the clone form)."""
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(num_ranks),
            "--master_port", str(free_port()), *extra, str(TRAIN), "--config", str(config), *overrides]


def start(cmd: list[str], cwd: Path, **extra_env: str) -> subprocess.Popen:
    # A session of its own, so a test can end the launcher and its ranks together.
    return subprocess.Popen(cmd, cwd=cwd, env={**env(), **extra_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout}s:\n{output[-4000:]}") from None
    return proc.returncode, output


def run(cmd: list[str], cwd: Path, timeout: float = TIMEOUT_S, **extra_env: str) -> tuple[int, str]:
    return finish(start(cmd, cwd, **extra_env), timeout)


def run_ok(cmd: list[str], cwd: Path, **extra_env: str) -> str:
    code, output = run(cmd, cwd, **extra_env)
    assert code == 0, f"exit {code}:\n{output[-6000:]}"
    return output


def metrics(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(run_dir)}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """Adapter and memory of the exported model (output_dir/final)."""
    weights = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    weights["memory"] = load_file(str(run_dir / "final" / "memory.safetensors"))["memory"]
    return weights


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = TIMEOUT_S, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError("the run ended before the awaited moment")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(poll)


# In-process runs (one rank, no launcher): 2 stages x 4 steps, a checkpoint every 2 steps, global
# batch 4. A launch takes a few seconds; the first stage alone (QUICK + STAGE_ONE) writes
# checkpoint-000002 and checkpoint-000004.
QUICK = [
    "curriculum.stages.0.steps=4",
    "curriculum.stages.1.steps=4",
    "curriculum.stages.1.advance=null",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=0",
    "batch.micro_batch_size=2",
    "batch.global_batch_size=4",
    "eval.every_steps=0",
    "data.valid_samples=8",
    "logging.every_steps=1",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
]
STAGE_ONE = ["curriculum.stages_per_launch=1"]


def train_in_process(run_dir: Path, *overrides: str) -> int:
    """`python -m rmt_scale.cli.train_worker --config tiny` in this process; its exit status."""
    from rmt_scale.cli.train_worker import main

    return main(["--config", "tiny", f"output_dir={run_dir}", *QUICK, *overrides])


def keep_logging():
    """Generator for a fixture: a run sets up the package's logging; restore it afterwards."""
    import logging

    package = logging.getLogger("rmt_scale")
    handlers, level = list(package.handlers), package.level
    yield
    package.handlers[:] = handlers
    package.setLevel(level)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]
