"""Training on 2 CPU ranks (gloo): files, ZeRO equivalence, kill + resume, another world size, two
launchers as two nodes. All runs use the shortened tiny recipe (helpers.SHORT: 2 stages x 20 steps)
and are compared with one reference run (ZeRO-2, 2 ranks, uninterrupted), which is started as
`rmt-scale train --config tiny` from a directory outside the repository; the others use the clone
form `deepspeed launch/train.py --config launch/configs/tiny.yaml`.

Tolerances (CPU, fp32):
* ZeRO stages 0, 2, 3: per-step losses within 1e-5 absolute, final weights within 1e-5; the
  stages only reorder fp32 sums (bucketed all-reduce vs reduce-scatter).
* killed and resumed on the same ranks: final weights within 1e-6 (in practice identical: the
  same data, dropout seeds and optimizer state are replayed).
* resumed on 1 rank instead of 2 (ZeRO-2 or ZeRO-3), or as two "nodes": within 1e-5 (gradient
  sums in a different order).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest
import yaml

from rmt_scale.resources import DEEPSPEED_DIR
from tests.training.helpers import (
    SHORT,
    TINY,
    deepspeed_cmd,
    final_weights,
    finish,
    free_port,
    losses,
    max_difference,
    metrics,
    run_ok,
    start,
    train_cmd,
    wait_for,
)

pytestmark = pytest.mark.distributed
STEPS = 40


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    shm_before = shared_memory_buffers()
    output = run_ok(train_cmd(2, "tiny", [*SHORT, f"output_dir={root / 'run'}"]), cwd=root)
    assert "trainable parameters:" in output
    # DeepSpeed's CPU shared-memory all-reduce is neither built nor left behind in /dev/shm.
    assert "deepspeed_shm_comm" not in output and shared_memory_buffers() == shm_before
    # Rank 0 logged the plan once: the filled JSON and the per-stage table.
    assert output.count("run plan") == 1 and '"train_batch_size": 8' in output
    assert "training done; the adapter of checkpoint-000040" in output
    return root / "run"


def shared_memory_buffers() -> set[str]:
    """Names of DeepSpeed's CPU all-reduce buffers in /dev/shm (it never unlinks them itself)."""
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob("deepspeed_allreduce_buffer_*")} if shm.is_dir() else set()


def test_tiny_run_writes_its_files(reference):
    config = yaml.safe_load((reference / "config.yaml").read_text())
    assert config["curriculum"]["stages"][0]["steps"] == 20 and config["output_dir"] == str(reference)
    train = metrics(reference)
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert {r["stage"] for r in train} == {0, 1} and all(r["tokens_per_s"] > 0 for r in train)
    assert {r["num_segments"] for r in train if r["stage"] == 1} == {1, 2}  # vary_n_segments
    evals = metrics(reference, "eval")
    assert [(r["stage"], r["step"]) for r in evals] == [(0, 10), (0, 20), (1, 30), (1, 40)]
    assert list((reference / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in (reference / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints == [f"checkpoint-{s:06d}" for s in range(5, STEPS + 1, 5)]
    for name in checkpoints:
        path = reference / "checkpoints" / name
        assert (path / "complete").is_file() and (path / "deepspeed").is_dir()
        assert yaml.safe_load((path / "config.yaml").read_text()) == config
    state = json.loads((reference / "checkpoints" / "checkpoint-000020" / "trainer_state.json").read_text())
    assert state["curriculum"] == {"stage": 1, "step_in_stage": 0, "tokens_in_stage": 0,
                                   "samples_in_stage": 0, "global_step": 20}  # a stage boundary
    assert state["world_size"] == 2 and state["zero_stage"] == 2 and state["precision"] == "fp32"
    # final/ is what `rmt-scale export` writes: adapter, memory, model card, config, the random base.
    final = reference / "final"
    assert {"adapter_config.json", "adapter_model.safetensors", "memory.safetensors", "rmt_config.json",
            "rmt_base.json", "README.md", "training_config.yaml", "trainer_state.json", "base"} <= \
        {p.name for p in final.iterdir()}
    assert json.loads((final / "rmt_base.json").read_text())["base_model_name_or_path"] == "base"
    assert (final / "base" / "config.json").is_file() and "All stages done" in (final / "README.md").read_text()
    assert json.loads((final / "trainer_state.json").read_text())["curriculum"]["global_step"] == STEPS
    weights = final_weights(reference)
    assert weights["memory"].shape == (4, 64) and any("lora_A" in k for k in weights)


@pytest.mark.parametrize("stage", [0, 3])
def test_zero_stages_give_the_same_losses(reference, tmp_path, stage):
    ds = json.loads((DEEPSPEED_DIR / "zero2.json").read_text())
    ds["zero_optimization"] = {"stage": 0} if stage == 0 else \
        json.loads((DEEPSPEED_DIR / "zero3.json").read_text())["zero_optimization"]
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    output = run_ok(deepspeed_cmd(2, TINY, [*SHORT, f"output_dir={tmp_path / 'run'}",
                                            f"deepspeed={tmp_path / 'ds.json'}"]), cwd=tmp_path)
    if stage == 3:  # memory (4 x 64) is split over the 2 ranks like every other parameter
        assert "memory parameter: partitioned by ZeRO-3 (128 of 256 elements on this rank)" in output
    expected, got = losses(reference), losses(tmp_path / "run")
    assert got.keys() == expected.keys()
    assert max(abs(got[s] - expected[s]) for s in expected) < 1e-5
    assert max_difference(final_weights(tmp_path / "run"), final_weights(reference)) < 1e-5


def rank_process(launcher: psutil.Process, local_rank: int) -> psutil.Process:
    for child in launcher.children(recursive=True):
        if f"--local_rank={local_rank}" in child.cmdline():
            return child
    raise AssertionError(f"no process for local rank {local_rank}")


def test_killed_rank_then_resume_equals_uninterrupted(reference, tmp_path):
    run_dir = tmp_path / "run"
    cmd = deepspeed_cmd(2, TINY, [*SHORT, f"output_dir={run_dir}"])
    proc = start(cmd, cwd=tmp_path)
    wait_for(lambda: (run_dir / "checkpoints" / "checkpoint-000010" / "complete").exists(), proc)
    rank_process(psutil.Process(proc.pid), 1).send_signal(signal.SIGKILL)
    code, output = finish(proc)
    assert code != 0, "the run finished before the kill landed"
    assert not (run_dir / "final").exists()
    # resume=auto (the recipe's default) continues from the newest complete checkpoint.
    output = run_ok(cmd, cwd=tmp_path)
    assert "resumed from" in output
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == list(range(1, STEPS + 1))  # records after the checkpoint were replaced, not doubled
    assert max_difference(final_weights(run_dir), final_weights(reference)) < 1e-6


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_resume_on_another_world_size(reference, tmp_path, zero):
    """Stage 1 on 2 ranks, stopping at the stage boundary; stage 2 on 1 rank (the global batch
    stays 8: gradient accumulation goes from 2 to 4), through DeepSpeed's universal checkpoint."""
    overrides = [*SHORT, f"output_dir={tmp_path / 'run'}", "curriculum.stages_per_launch=1",
                 f"deepspeed={zero}"]
    output = run_ok(deepspeed_cmd(2, TINY, overrides), cwd=tmp_path)
    assert "stopping at the end of stage 1" in output
    assert not (tmp_path / "run" / "final").exists()
    output = run_ok(deepspeed_cmd(1, TINY, overrides), cwd=tmp_path)
    assert "universal checkpoint" in output and "4 accumulation x 1 ranks = 8" in output
    assert [r["step"] for r in metrics(tmp_path / "run")] == list(range(1, STEPS + 1))
    assert max_difference(final_weights(tmp_path / "run"), final_weights(reference)) < 1e-5


def test_two_launchers_as_two_nodes(reference, tmp_path):
    """`--no_ssh` multi-node: one launcher per node (here both on this machine), through the
    stage transition; the same 2-rank training as the reference."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = free_port()
    overrides = [*SHORT, f"output_dir={tmp_path / 'run'}"]
    launchers = []
    for node_rank in (0, 1):
        cmd = deepspeed_cmd(1, TINY, overrides, extra=[
            "--hostfile", str(hostfile), "--no_ssh", "--num_nodes", "2", "--node_rank", str(node_rank),
            "--master_addr", "127.0.0.1"])
        cmd[cmd.index("--master_port") + 1] = str(port)
        launchers.append(start(cmd, cwd=tmp_path))
    results = [finish(proc) for proc in launchers]
    for code, output in results:
        assert code == 0, output[-4000:]
    assert "stage 2/2" in results[0][1]
    assert max_difference(final_weights(tmp_path / "run"), final_weights(reference)) < 1e-5
