"""The short CPU run of the SmolLM2 recipe on the default checkpoint (the README's end-to-end
command), exactly as written in the recipe's header. Needs `rmt-scale fetch-default` first."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from rmt_scale.resources import RECIPES_DIR
from rmt_scale.training.config import load_train_config
from tests.training.helpers import metrics, run_ok

RECIPE = RECIPES_DIR / "smollm2_babilong.yaml"


def header_command() -> list[str]:
    """The command after "Short CPU check" in the recipe's comment header."""
    lines = RECIPE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Short CPU check" in line) + 1
    text = ""
    for line in lines[start:]:
        text += line.lstrip("#").strip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            break
    return shlex.split(text)


@pytest.mark.slow
def test_smollm2_short_cpu_run(tmp_path):
    base = Path(load_train_config(RECIPE).model.path).expanduser()
    if not (base / "config.json").is_file():
        pytest.skip(f"default checkpoint not at {base}; run `rmt-scale fetch-default`")
    command = header_command()
    assert command[:4] == ["rmt-scale", "train", "--config", "smollm2_babilong"]
    command = [c for c in command if not c.startswith("output_dir=")] + [f"output_dir={tmp_path / 'run'}",
                                                                          "logging.progress_bar=false",
                                                                          "logging.every_steps=1"]
    run_ok([sys.executable, "-m", "rmt_scale.cli.main", *command[1:]], cwd=tmp_path)
    train = metrics(tmp_path / "run")
    assert [r["step"] for r in train] == [1, 2, 3, 4] and {r["num_segments"] for r in train} == {1, 2}
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
