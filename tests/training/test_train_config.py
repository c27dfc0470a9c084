"""The training config: YAML -> overrides -> validated dataclasses, one-line errors."""

from __future__ import annotations

import pytest
import yaml

from rmt_scale.errors import ConfigError
from rmt_scale.training.config import (
    TrainConfig,
    apply_override,
    config_from_dict,
    load_train_config,
)


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_need_only_a_model(tmp_path):
    config = load_train_config(write(tmp_path, "model: {path: /somewhere}\n"))
    assert config.rmt.num_mem_tokens == 16 and config.deepspeed == "zero2"
    assert config.model.path == "/somewhere"


def test_nested_values_and_overrides(tmp_path):
    path = write(tmp_path, """
model: {init: random}
curriculum:
  stages:
    - {num_segments: 1, steps: 10}
    - {num_segments: 4, tokens: 100000, lr: 1.0e-4, vary_n_segments: true, min_segments: 2,
       advance: {metric: loss, threshold: 0.5}}
""")
    config = load_train_config(path, ["seed=7", "output_dir=/tmp/x", "curriculum.stages.0.steps=3",
                                      "rmt.bptt_depth=2", "lora.target_modules=[q_proj, v_proj]",
                                      "optimizer.lr=1e-3", "deepspeed=ds_configs/zero3.json"])
    assert config.seed == 7 and config.output_dir == "/tmp/x"
    assert config.curriculum.stages[0].steps == 3
    second = config.curriculum.stages[1]
    assert second.tokens == 100000 and second.advance.metric == "loss" and second.lr == 1e-4
    assert config.rmt.bptt_depth == 2 and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.optimizer.lr == 1e-3  # "1e-3" is a string to YAML 1.1; still a number here
    assert config.deepspeed == "ds_configs/zero3.json"


def test_unknown_keys_list_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key.*'lr'.*valid keys are \[.*'model'.*'rmt'"):
        load_train_config(write(tmp_path, "model: {init: random}\nlr: 1\n"))
    with pytest.raises(ConfigError, match=r"rmt\.num_memory_tokens.*valid keys are .*num_mem_tokens"):
        load_train_config(write(tmp_path, "model: {init: random}\n"), ["rmt.num_memory_tokens=4"])
    with pytest.raises(ConfigError, match=r"curriculum\.stages\.0.*valid keys are .*num_segments"):
        load_train_config(write(tmp_path, "model: {init: random}\ncurriculum: {stages: [{segments: 2, steps: 1}]}\n"))


@pytest.mark.parametrize("override, message", [
    ("seed=abc", "seed must be an integer"),
    ("rmt.segment_checkpointing=maybe", "segment_checkpointing must be true or false"),
    ("batch.micro_batch_size=0", "micro_batch_size must be positive"),
    ("curriculum.stages=[]", "curriculum.stages is empty"),
    ("curriculum.stages.0.steps=null", "exactly one of steps and tokens"),
    ("curriculum.stages.0.tokens=5", "exactly one of steps and tokens"),
    ("curriculum.stages.3.steps=5", "out of range"),
    ("batch.grad_accum=2", "exactly one of batch.grad_accum and batch.global_batch_size"),
    ("batch.global_batch_size=0", "global_batch_size must be positive"),
    ("precision=fp8", "precision must be one of"),
    ("rmt.segment_size=1000", "exceeds model.random.max_positions"),
    ("lora.enabled=false", "nothing to train besides memory"),
    ("noequals", "not key=value"),
    ("data.valid_samples=0", "advance on a validation metric but data.valid_samples is 0"),
])
def test_bad_values_are_one_line_errors(tmp_path, override, message):
    path = write(tmp_path, "model: {init: random}\ncurriculum: {stages: [{num_segments: 1, steps: 2, "
                           "advance: {threshold: 0.5}}]}\n"
                           "batch: {micro_batch_size: 1, global_batch_size: 2}\nrmt: {segment_size: 16}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_train_config(path, [override])
    assert "\n" not in str(caught.value)


def test_pretrained_needs_a_path():
    with pytest.raises(ConfigError, match="model.path is required"):
        config_from_dict({"model": {"init": "pretrained"}})


@pytest.mark.parametrize("text, message", [
    ("model: [unclosed\n", "invalid YAML at line"),
    ("- a list\n", "expected a mapping"),
])
def test_unreadable_yaml(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml not found: no such file"):
        load_train_config(tmp_path / "nope.yaml")


def test_resolved_yaml_round_trips(tmp_path):
    config = load_train_config(write(tmp_path, "model: {init: random}\n"), ["curriculum.stages=[{num_segments: 2, steps: 5}]"])
    again = config_from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config
    assert isinstance(again, TrainConfig)


def test_override_creates_sections_and_sets_list_items():
    values = {"curriculum": {"stages": [{"num_segments": 1, "steps": 1}]}}
    apply_override(values, "curriculum.stages.0.lr=0.5")
    apply_override(values, "data.synthetic.key_length=3")
    assert values["curriculum"]["stages"][0]["lr"] == 0.5
    assert values["data"] == {"synthetic": {"key_length": 3}}


def test_batch_resolution():
    config = config_from_dict({"model": {"init": "random"}, "batch": {"micro_batch_size": 2, "global_batch_size": 8}})
    assert config.batch.resolve(2) == (2, 2, 8)
    assert config.batch.resolve(1) == (2, 4, 8)
    with pytest.raises(ConfigError, match="not a multiple"):
        config.batch.resolve(3)
    config = config_from_dict({"model": {"init": "random"}, "batch": {"micro_batch_size": 2, "grad_accum": 3}})
    assert config.batch.resolve(4) == (2, 3, 24)


def config_keys(cls=TrainConfig, prefix=""):
    """Every dotted key of the config (list items as N)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, kind = f"{prefix}{f.name}", hints[f.name]
        yield key
        inner = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        if typing.get_origin(kind) is list and dataclasses.is_dataclass(typing.get_args(kind)[0]):
            yield from config_keys(typing.get_args(kind)[0], f"{key}.N.")
        elif isinstance(inner[0], type) and dataclasses.is_dataclass(inner[0]):
            yield from config_keys(inner[0], f"{key}.")


def test_every_key_is_documented():
    from tests.training.helpers import REPO

    docs = (REPO / "docs" / "configuration.md").read_text()
    missing = [key for key in config_keys() if f"`{key}`" not in docs]
    assert not missing, f"docs/configuration.md does not document {missing}"
