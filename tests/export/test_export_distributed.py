"""Train the tiny recipe a few steps on 2 CPU ranks under ZeRO 0-3 (and ZeRO-3 offload), export the
DeepSpeed checkpoint with `rmt-scale export`, and check the adapter against training itself:

* its validation loss on the run's validation samples equals the loss the trainer computed with
  its live (for ZeRO-3: gathered) parameters at the last evaluation (metrics.jsonl), so the
  offline checkpoint reader rebuilds exactly the weights training ended with;
* loaded in a fresh process, its logits equal those of output_dir/final, which the training launch
  wrote after its last stage with the same export code (final/ is what `rmt-scale export` writes).

Tolerance: 1e-5 absolute (fp32 on CPU; the validation batches differ in composition between the
two, which reorders fp32 sums; in practice the logits are identical).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rmt_scale.errors import CheckpointError
from rmt_scale.resources import DEEPSPEED_DIR
from tests.training.helpers import TINY, deepspeed_cmd, env, metrics, run, run_ok

pytestmark = pytest.mark.distributed
TOLERANCE = 1e-5
# 2 stages x 2 steps, checkpoints at steps 2 and 4, global batch 8.
FEW_STEPS = [
    "curriculum.stages.0.steps=2",
    "curriculum.stages.1.steps=2",
    "curriculum.stages.1.advance=null",
    "checkpoint.every_steps=0",
    "checkpoint.keep_last=0",
    "batch.micro_batch_size=2",
    "batch.global_batch_size=8",
    "eval.every_steps=0",
    "data.valid_samples=8",
    "logging.progress_bar=false",
]


def cli(*args: str, cwd: Path) -> tuple[int, str]:
    return run([sys.executable, "-m", "rmt_scale.cli.main", *args], cwd=cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`runs(stage)`: the run directory of the few-step tiny run at that ZeRO stage (trained once)."""
    done: dict[int, Path] = {}

    def get(stage: int | str) -> Path:
        if stage not in done:
            root = tmp_path_factory.mktemp(f"zero{stage}")
            config = DEEPSPEED_DIR / f"zero{stage}.json"  # stage "3_offload": zero3_offload.json
            if stage == 0:  # no shipped recipe: ZeRO-2's JSON with ZeRO turned off
                ds = json.loads((DEEPSPEED_DIR / "zero2.json").read_text())
                ds["zero_optimization"] = {"stage": 0}
                config = root / "zero0.json"
                config.write_text(json.dumps(ds))
            run_ok(deepspeed_cmd(2, TINY, [*FEW_STEPS, f"output_dir={root / 'run'}", f"deepspeed={config}"]),
                   cwd=root)
            done[stage] = root / "run"
        return done[stage]

    return get


# "3_offload": ZeRO-3 with parameters and optimizer state offloaded to CPU (DeepSpeed builds its
# CPU Adam extension the first time, about 2 minutes on a fresh machine).
@pytest.mark.parametrize("stage", [0, 1, 2, 3, "3_offload"])
def test_export_gives_the_logits_of_training(runs, tmp_path, stage):
    run_dir = runs(stage)
    code, output = cli("export", "--checkpoint", str(run_dir), "--out", str(tmp_path / "adapter"), cwd=tmp_path)
    assert code == 0, output[-3000:]
    assert "checkpoint-000004" in output  # the newest complete checkpoint
    adapter = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "memory.safetensors", "rmt_config.json",
            "rmt_base.json", "README.md", "training_config.yaml", "base"} <= {p.name for p in adapter.iterdir()}
    card = (adapter / "README.md").read_text()
    assert f"ZeRO stage {str(stage)[0]}" in card and "All stages done" in card and "segments of 16 tokens" in card
    last = metrics(run_dir, "eval")[-1]
    assert last["step"] == 4
    assert abs(validation_loss(adapter, last["num_segments"]) - last["loss"]) <= TOLERANCE
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("logits.py")), str(adapter),
                             str(run_dir / "final")], cwd=tmp_path, env=env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    diff = json.loads(result.stdout.strip().splitlines()[-1])
    assert diff["memory_model"] <= TOLERANCE and diff["plain_peft"] <= TOLERANCE, diff


def validation_loss(adapter: Path, num_segments: int) -> float:
    """Loss of the exported adapter on the run's validation samples of that length."""
    import torch
    import yaml

    from rmt_scale import RecurrentMemoryModel
    from rmt_scale.training.config import config_from_dict
    from rmt_scale.training.data import RunData

    config = config_from_dict(yaml.safe_load((adapter / "training_config.yaml").read_text()))
    model = RecurrentMemoryModel.from_pretrained(str(adapter)).eval()
    data = RunData(config, config.model.random.vocab_size)
    samples = data.valid(num_segments)
    with torch.no_grad():
        return float(model(**data.collate([samples[i] for i in range(len(samples))])).loss)


def test_one_checkpoint_and_partial_or_corrupt_ones(runs, tmp_path):
    from rmt_scale.export.adapter import export_checkpoint

    broken = tmp_path / "broken"
    shutil.copytree(runs(3), broken)  # a copy to damage
    checkpoints, out = broken / "checkpoints", tmp_path / "out"
    export_checkpoint(checkpoints / "checkpoint-000002", tmp_path / "a2")
    assert json.loads((tmp_path / "a2" / "trainer_state.json").read_text())["curriculum"]["global_step"] == 2
    (checkpoints / "checkpoint-000006.tmp").mkdir()  # a save cut off before its rename
    with pytest.raises(CheckpointError, match="still being written"):
        export_checkpoint(checkpoints / "checkpoint-000006.tmp", out)
    (checkpoints / "checkpoint-000004" / "complete").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        export_checkpoint(checkpoints / "checkpoint-000004", out)
    assert export_checkpoint(broken, out).name == "checkpoint-000002"  # the newest complete one
    before = sorted(p.name for p in out.iterdir())
    optim = sorted((checkpoints / "checkpoint-000002" / "deepspeed").glob("*optim_states.pt"))[-1]
    optim.write_bytes(optim.read_bytes()[:1000])
    # Through the CLI: one line, exit 2; the earlier export untouched, no temporary dirs left.
    code, output = cli("export", "--checkpoint", str(broken), "--out", str(out), "--overwrite", cwd=tmp_path)
    assert code == 2 and "error: " in output and "truncated" in output, output[-2000:]
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    optim.unlink()  # one rank's file missing: its manifest says so
    with pytest.raises(CheckpointError, match=rf"{optim.name} is missing; the checkpoint is damaged"):
        export_checkpoint(broken, tmp_path / "x")
    from rmt_scale.distributed import read_trainable_weights

    with pytest.raises(CheckpointError, match="ranks"):  # the reader's own check, behind the manifest
        read_trainable_weights(checkpoints / "checkpoint-000002" / "deepspeed")
    assert not (tmp_path / "x").exists()


def eval_results(path: Path, lengths: list[str], samples: int, accuracy: float, carry: bool = True) -> Path:
    """A results.json as `rmt-scale eval` writes it (cells only; no generation needed here)."""
    path.write_text(json.dumps({
        "model": {"path": "runs/x/final", "kind": "memory", "base": "tiny", "rmt_config": {}, "carry_memory": carry},
        "settings": {"tasks": ["qa1"], "lengths": lengths, "samples": samples, "seed": 0, "split": "validation"},
        "results": [{"task": "qa1", "length": n, "samples": samples, "accuracy": accuracy} for n in lengths],
        "predictions": []}))
    return path


def test_the_card_shows_the_evaluations_merged_into_one_table(runs, tmp_path):
    short = eval_results(tmp_path / "short.json", ["64", "512"], 48, 0.75)
    long = eval_results(tmp_path / "long.json", ["2k"], 24, 0.5)
    code, output = cli("export", "--checkpoint", str(runs(2)), "--out", str(tmp_path / "adapter"),
                       "--eval-results", str(long), str(short), cwd=tmp_path)
    assert code == 0, output[-3000:]
    shipped = json.loads((tmp_path / "adapter" / "eval_results.json").read_text())
    assert shipped["settings"]["lengths"] == ["64", "512", "2k"]
    assert shipped["settings"]["samples"] == {"64": 48, "512": 48, "2k": 24}
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "| task | 64 | 512 | 2k |\n|---|---|---|---|\n| qa1 | 0.75 | 0.75 | 0.50 |" in card
    assert "samples per cell: 48 at 64, 48 at 512, 24 at 2k" in card
    # The last-segment-only control is another model: not merged, one line, nothing written.
    control = eval_results(tmp_path / "control.json", ["8k"], 48, 0.2, carry=False)
    code, output = cli("export", "--checkpoint", str(runs(2)), "--out", str(tmp_path / "adapter2"),
                       "--eval-results", str(short), str(control), cwd=tmp_path)
    assert code == 2 and "evaluate different models (carry_memory" in output, output[-2000:]
    assert not (tmp_path / "adapter2").exists()
