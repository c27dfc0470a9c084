"""Every shipped recipe and DeepSpeed JSON is valid, and the DeepSpeed "auto" fields fill in."""

from __future__ import annotations

import json
import shlex

import pytest

from rmt_scale.distributed import fill_ds_config, read_ds_config, zero_stage
from rmt_scale.errors import ConfigError
from rmt_scale.training.config import load_train_config
from tests.training.helpers import REPO

RECIPES = sorted((REPO / "launch" / "configs").glob("*.yaml"))
DS_CONFIGS = sorted((REPO / "ds_configs").glob("*.json"))


def test_the_promised_files_exist():
    assert {p.name for p in DS_CONFIGS} >= {"zero1.json", "zero2.json", "zero2_offload.json", "zero3.json",
                                             "zero3_offload.json"}
    assert {"tiny.yaml", "smollm2_babilong.yaml", "llama7b_babilong.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid_and_starts_with_its_command(recipe, tmp_path):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# deepspeed ") or first.startswith("# python ")
    command = shlex.split(first[2:])
    assert "launch/train.py" in command and f"launch/configs/{recipe.name}" in command
    config = load_train_config(recipe)
    read_ds_config(config.deepspeed)
    # The overrides every recipe must take.
    other = load_train_config(recipe, [f"output_dir={tmp_path}", "deepspeed=ds_configs/zero3.json", "seed=5"])
    assert (other.output_dir, other.deepspeed, other.seed) == (str(tmp_path), "ds_configs/zero3.json", 5)
    for ranks in (1, 2, 8):
        if config.batch.global_batch_size and config.batch.global_batch_size % (config.batch.micro_batch_size * ranks):
            continue
        fill_ds_config(read_ds_config(config.deepspeed), config, ranks, "fp32", hidden_size=64)


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_ds_config_fills_from_the_training_config(path, precision):
    config = load_train_config(REPO / "launch" / "configs" / "tiny.yaml",
                               ["batch.micro_batch_size=2", "batch.global_batch_size=12"])
    raw = read_ds_config(path)
    assert raw["train_batch_size"] == "auto" and raw["train_micro_batch_size_per_gpu"] == "auto"
    assert raw["gradient_accumulation_steps"] == "auto"
    ds = fill_ds_config(raw, config, num_ranks=3, precision=precision, hidden_size=64)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (12, 2, 2)
    assert ds["bf16"]["enabled"] == (precision == "bf16") and ds["fp16"]["enabled"] == (precision == "fp16")
    assert ds["gradient_clipping"] == config.optimizer.grad_clip
    assert "auto" not in json.dumps(ds)
    assert zero_stage(ds) == int(path.stem[4])
    if "offload" in path.stem:
        assert ds["optimizer"]["params"]["lr"] == config.optimizer.lr


def test_a_forced_batch_size_that_disagrees_is_an_error():
    config = load_train_config(REPO / "launch" / "configs" / "tiny.yaml", ["batch.global_batch_size=16"])
    raw = read_ds_config(REPO / "ds_configs" / "zero2.json")
    fill_ds_config({**raw, "train_batch_size": 16}, config, 2, "fp32", 64)  # agrees: fine
    with pytest.raises(ConfigError, match=r"train_batch_size=32 but the training config gives 16 "
                                          r"\(micro_batch_size 8 x grad_accum 1 x 2 ranks = 16\)"):
        fill_ds_config({**raw, "train_batch_size": 32}, config, 2, "fp32", 64)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=4"):
        fill_ds_config({**raw, "gradient_accumulation_steps": 4}, config, 2, "fp32", 64)
    with pytest.raises(ConfigError, match="bf16.enabled=True but precision resolves to fp32"):
        fill_ds_config({**raw, "bf16": {"enabled": True}}, config, 2, "fp32", 64)
    with pytest.raises(ConfigError, match="remove the \"scheduler\" section"):
        fill_ds_config({**raw, "scheduler": {"type": "WarmupLR"}}, config, 2, "fp32", 64)
    with pytest.raises(ConfigError, match=r"nothing fills \"auto\" at \['zero_optimization.sub_group_size'\]"):
        fill_ds_config({**raw, "zero_optimization": {"stage": 2, "sub_group_size": "auto"}}, config, 2, "fp32", 64)


@pytest.mark.parametrize("text, message", [("{not json", "invalid JSON at line 1"), ("[1, 2]", "must be a JSON object")])
def test_unreadable_ds_config(tmp_path, text, message):
    path = tmp_path / "ds.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_ds_config(path)
    with pytest.raises(ConfigError, match="not found"):
        read_ds_config(tmp_path / "missing.json")
