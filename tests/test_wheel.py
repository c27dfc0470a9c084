"""The tool installs like one: a built wheel, installed in a fresh virtual environment outside the
repository, trains (2 CPU ranks), exports and evaluates from a directory that holds no clone.

The fresh environment gets its heavy dependencies (torch, deepspeed, transformers, ...) from the
test's own environment through a path entry, not a second download; rmt_scale itself comes only
from the wheel (the test checks where it is imported from).
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.bpe import byte_level_bpe

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin directory of a fresh venv with the wheel installed, its environment)."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(dist), str(REPO)], check=True, cwd=root, timeout=TIMEOUT_S)
    wheel = next(dist.glob("rmt_scale-*.whl"))
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    target = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                          text=True).strip())
    # Dependencies from this environment; rmt_scale from the wheel only (this environment's
    # editable install is a .pth hook in its site-packages, which a plain path entry does not run).
    (target / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, timeout=TIMEOUT_S)
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PYTHONPATH",
                          "VIRTUAL_ENV")}
    env.update(PATH=f"{env_dir / 'bin'}:{env.get('PATH', '')}", OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env_dir / "bin", env


def test_wheel_installs_trains_exports_and_evaluates_outside_the_repository(installed, tmp_path):
    bin_dir, env = installed
    work = tmp_path / "work"
    work.mkdir()
    where = run([str(bin_dir / "python"), "-c", "import rmt_scale; print(rmt_scale.__file__)"], work, env)
    assert str(REPO) not in where and "site-packages" in where, where
    assert run([str(bin_dir / "rmt-scale"), "--version"], work, env).strip().endswith(
        __import__("rmt_scale").__version__)
    listed = run([str(bin_dir / "rmt-scale"), "configs", "ls"], work, env)
    assert "tiny" in listed and "zero2" in listed, listed

    # A tokenizer the evaluation can use; the tiny recipe then trains on BABILong-style samples.
    tokenizer = byte_level_bpe([f"Mary went to the kitchen {i}. Where is Mary? Answer: kitchen" for i in range(50)],
                               300, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    tokenizer.save_pretrained(work / "tokenizer")
    overrides = [
        "output_dir=run", "data.kind=babilong", "data.babilong.tokenizer=tokenizer",
        f"model.random.vocab_size={len(tokenizer)}", "model.random.max_positions=256",
        "rmt.segment_size=96", "data.num_samples=32", "data.valid_samples=4",
        "curriculum.stages.0.steps=4", "curriculum.stages.1.steps=4", "curriculum.stages.1.advance=null",
        "batch.micro_batch_size=2", "batch.global_batch_size=4", "eval.every_steps=0",
        "checkpoint.every_steps=0", "logging.progress_bar=false",
    ]
    run([str(bin_dir / "rmt-scale"), "train", "--config", "tiny", "--num-gpus", "2", *overrides], work, env)
    assert (work / "run" / "final" / "memory.safetensors").is_file()

    run([str(bin_dir / "rmt-scale"), "export", "--checkpoint", "run", "--out", "adapter"], work, env)
    assert (work / "adapter" / "adapter_model.safetensors").is_file()
    assert (work / "adapter" / "tokenizer_config.json").is_file()

    run([str(bin_dir / "rmt-scale"), "eval", "--model", "adapter", "--tasks", "qa1", "--lengths", "0k",
         "--samples", "2", "--max-new-tokens", "4", "--out", "eval", "--no-progress"], work, env)
    results = json.loads((work / "eval" / "results.json").read_text())
    assert results["results"] and 0.0 <= results["results"][0]["accuracy"] <= 1.0
