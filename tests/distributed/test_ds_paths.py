"""Recipes and DeepSpeed JSONs are found by name from any working directory (package data), the
old clone paths still work, and a file in the working directory wins over a shipped one."""

from __future__ import annotations

import json

import pytest

from rmt_scale.distributed import read_ds_config
from rmt_scale.errors import ConfigError
from rmt_scale.resources import DEEPSPEED_DIR, RECIPES_DIR, find_ds_config, find_recipe
from rmt_scale.training.config import load_train_config

NAMES = ("zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")


def test_ds_config_by_name_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in NAMES:
        shipped = DEEPSPEED_DIR / f"{name}.json"
        assert find_ds_config(name) == find_ds_config(f"{name}.json") == shipped
        assert find_ds_config(f"ds_configs/{name}.json") == shipped  # what older recipes say
        assert read_ds_config(name)["zero_optimization"]["stage"] == int(name[4])


def test_recipe_by_name_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = RECIPES_DIR / "tiny.yaml"
    assert find_recipe("tiny") == find_recipe("tiny.yaml") == find_recipe("launch/configs/tiny.yaml") == shipped
    assert load_train_config("tiny").model.init == "random"


def test_a_file_in_the_working_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds_configs").mkdir()
    own = json.loads((DEEPSPEED_DIR / "zero2.json").read_text())
    own["zero_optimization"]["stage"] = 1
    (tmp_path / "ds_configs" / "zero2.json").write_text(json.dumps(own))
    assert find_ds_config("ds_configs/zero2.json") == tmp_path / "ds_configs" / "zero2.json"
    assert read_ds_config("ds_configs/zero2.json")["zero_optimization"]["stage"] == 1
    assert find_ds_config("zero2") == DEEPSPEED_DIR / "zero2.json"  # a bare name: the shipped one
    (tmp_path / "tiny.yaml").write_text("model: {init: random}\nseed: 7\n")
    assert find_recipe("tiny.yaml") == tmp_path / "tiny.yaml" and load_train_config("tiny.yaml").seed == 7


def test_missing_ones_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"deepspeed config ds_configs/nope.json not found: no such file, "
                                          r"and no shipped DeepSpeed JSON of that name \(zero1, zero2, "):
        find_ds_config("ds_configs/nope.json")
    with pytest.raises(ConfigError, match="deepspeed config /elsewhere/zero2.json not found"):
        find_ds_config("/elsewhere/zero2.json")  # a path elsewhere is not silently a shipped name
    with pytest.raises(ConfigError, match=r"config file nope not found: .*no shipped recipe .*tiny"):
        find_recipe("nope")
