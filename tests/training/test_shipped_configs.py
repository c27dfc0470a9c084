"""Every shipped recipe and DeepSpeed JSON is valid, and the DeepSpeed "auto" fields fill in."""

from __future__ import annotations

import json
import shlex

import pytest

from rmt_scale.distributed import fill_ds_config, read_ds_config, zero_stage
from rmt_scale.errors import ConfigError
from rmt_scale.resources import DEEPSPEED_DIR, RECIPES_DIR, find_ds_config, list_recipes
from rmt_scale.training.config import load_train_config
from rmt_scale.training.plan import build_plan
from tests.training.helpers import REPO

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
DS_CONFIGS = sorted(DEEPSPEED_DIR.glob("*.json"))


def test_the_promised_files_exist_and_the_clone_paths_point_at_them():
    assert {p.name for p in DS_CONFIGS} >= {"zero1.json", "zero2.json", "zero2_offload.json", "zero3.json",
                                             "zero3_offload.json"}
    assert {"tiny.yaml", "smollm2_babilong.yaml", "llama7b_babilong.yaml"} <= {p.name for p in RECIPES}
    # `deepspeed launch/train.py --config launch/configs/tiny.yaml` keeps working in a clone.
    for link, target in ((REPO / "launch" / "configs", RECIPES_DIR), (REPO / "ds_configs", DEEPSPEED_DIR)):
        assert link.is_symlink() and not link.readlink().is_absolute()
        assert link.resolve() == target.resolve()
    assert all(summary for _, summary in list_recipes())


def fill(raw: dict, config, ranks: int, precision: str, hidden_size: int = 64, source: str = "ds.json") -> dict:
    micro, accum, total = config.batch.resolve(ranks)
    opt = config.optimizer
    return fill_ds_config(raw, micro_batch=micro, grad_accum=accum, train_batch=total, grad_clip=opt.grad_clip,
                          precision=precision, hidden_size=hidden_size, source=source,
                          optimizer={"lr": opt.lr, "betas": opt.betas, "eps": opt.eps,
                                     "weight_decay": opt.weight_decay})


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid_and_starts_with_its_commands(recipe, tmp_path):
    name = recipe.stem
    lines = recipe.read_text().splitlines()
    assert shlex.split(lines[0][2:])[:4] == ["rmt-scale", "train", "--config", name]
    clone = shlex.split(lines[1][2:])
    assert clone[0] == "deepspeed" and "launch/train.py" in clone and f"launch/configs/{recipe.name}" in clone
    config = load_train_config(name)
    assert load_train_config(f"launch/configs/{recipe.name}") == config  # the clone path, any directory
    assert "/" not in config.deepspeed, "recipes name their DeepSpeed JSON (deepspeed: zero2)"
    read_ds_config(config.deepspeed)
    # The overrides every recipe must take.
    other = load_train_config(recipe, [f"output_dir={tmp_path}", "deepspeed=zero3", "seed=5"])
    assert (other.output_dir, other.deepspeed, other.seed) == (str(tmp_path), "zero3", 5)
    for ranks in (1, 2, 8):
        if config.batch.global_batch_size and config.batch.global_batch_size % (config.batch.micro_batch_size * ranks):
            continue
        fill(read_ds_config(config.deepspeed), config, ranks, "fp32")


def test_the_tiny_recipe_plans_as_its_header_says():
    plan = build_plan(load_train_config("tiny", ["output_dir=unused"]), "tiny", world_size=2)
    assert plan.source == RECIPES_DIR / "tiny.yaml" and plan.ds_source == DEEPSPEED_DIR / "zero2.json"
    assert (plan.micro_batch, plan.grad_accum, plan.global_batch) == (8, 1, 16)


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_ds_config_fills_from_the_training_config(path, precision):
    config = load_train_config("tiny", ["batch.micro_batch_size=2", "batch.global_batch_size=12"])
    raw = read_ds_config(path)
    assert raw["train_batch_size"] == "auto" and raw["train_micro_batch_size_per_gpu"] == "auto"
    assert raw["gradient_accumulation_steps"] == "auto"
    assert read_ds_config(path.stem) == raw == json.loads(find_ds_config(path.name).read_text())
    ds = fill(raw, config, 3, precision)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (12, 2, 2)
    assert ds["bf16"]["enabled"] == (precision == "bf16") and ds["fp16"]["enabled"] == (precision == "fp16")
    assert ds["gradient_clipping"] == config.optimizer.grad_clip
    assert "auto" not in json.dumps(ds)
    assert zero_stage(ds) == int(path.stem[4])
    if "offload" in path.stem:
        assert ds["optimizer"]["params"]["lr"] == config.optimizer.lr
        assert ds["optimizer"]["params"]["betas"] == list(config.optimizer.betas)
    if "reduce_bucket_size" in raw["zero_optimization"]:
        assert ds["zero_optimization"]["reduce_bucket_size"] == 64 * 64  # hidden_size squared


def test_a_forced_batch_size_that_disagrees_is_an_error():
    config = load_train_config("tiny", ["batch.global_batch_size=16"])
    raw = read_ds_config("zero2")
    fill({**raw, "train_batch_size": 16}, config, 2, "fp32")  # agrees: fine
    with pytest.raises(ConfigError, match=r"train_batch_size=32 but the training config gives 16 "
                                          r"\(micro_batch_size 8 x grad_accum 1 x 2 ranks = 16\)"):
        fill({**raw, "train_batch_size": 32}, config, 2, "fp32")
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=4"):
        fill({**raw, "gradient_accumulation_steps": 4}, config, 2, "fp32")
    with pytest.raises(ConfigError, match="bf16.enabled=True but precision resolves to fp32"):
        fill({**raw, "bf16": {"enabled": True}}, config, 2, "fp32")
    with pytest.raises(ConfigError, match="remove the \"scheduler\" section"):
        fill({**raw, "scheduler": {"type": "WarmupLR"}}, config, 2, "fp32")
    with pytest.raises(ConfigError, match=r"nothing fills \"auto\" at \['zero_optimization.sub_group_size'\]"):
        fill({**raw, "zero_optimization": {"stage": 2, "sub_group_size": "auto"}}, config, 2, "fp32")
    with pytest.raises(ConfigError, match="precision must be resolved"):
        fill(raw, config, 2, "auto")


@pytest.mark.parametrize("text, message", [("{not json", "invalid JSON at line 1"), ("[1, 2]", "must be a JSON object")])
def test_unreadable_ds_config(tmp_path, text, message):
    path = tmp_path / "ds.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_ds_config(path)
    with pytest.raises(ConfigError, match="not found"):
        read_ds_config(tmp_path / "missing.json")
