"""save_pretrained / from_pretrained round trips, file modes, and bad saved directories."""

from __future__ import annotations

import ast
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file

import rmt_scale.model.outputs as outputs
import rmt_scale.model.saving as saving
from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import AdapterError
from rmt_scale.model.outputs import atomic_directory
from rmt_scale.model.saving import read_adapter
from tests.tiny_models import tiny_causal_lm


def trained_like(model):
    """Change what a memory checkpoint holds: the memory and LoRA weights (not the base)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "cell.memory" or "lora_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def test_round_trip_plain(tmp_path):
    model = trained_like(RecurrentMemoryModel.wrap(tiny_causal_lm(), RMTConfig(num_mem_tokens=3, segment_size=8, bptt_depth=2)))
    model.save_pretrained(tmp_path / "m")
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm())
    assert loaded.config == model.config
    ids = torch.randint(3, 64, (2, 30))
    torch.testing.assert_close(loaded(ids, labels=ids).loss, model(ids, labels=ids).loss)


def test_round_trip_lora_and_plain_peft_loads_the_adapter(tmp_path):
    base = get_peft_model(tiny_causal_lm(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model = trained_like(RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=8)))
    model.save_pretrained(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "memory.safetensors", "rmt_config.json"} <= names
    ids = torch.randint(3, 64, (1, 30))
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm())
    torch.testing.assert_close(loaded(ids, labels=ids).loss, model(ids, labels=ids).loss)
    # Plain PEFT reads the same directory.
    peft_model = PeftModel.from_pretrained(tiny_causal_lm(), str(tmp_path / "m"))
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())


def test_from_pretrained_loads_recorded_base(tmp_path):
    tiny_causal_lm().save_pretrained(tmp_path / "base")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    model = trained_like(RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=8)))
    model.save_pretrained(tmp_path / "m")
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.memory, model.memory)


def test_missing_or_corrupt_files(tmp_path):
    model = RecurrentMemoryModel.wrap(tiny_causal_lm(), RMTConfig(num_mem_tokens=2, segment_size=8))
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(AdapterError, match="no such model directory"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "nowhere", tiny_causal_lm())
    memory_file = tmp_path / "m" / "memory.safetensors"
    memory_file.write_bytes(memory_file.read_bytes()[:40])
    with pytest.raises(AdapterError, match="unreadable or truncated"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm())
    memory_file.unlink()
    with pytest.raises(AdapterError, match="memory file missing"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm())
    (tmp_path / "m" / "rmt_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm())


def test_base_of_other_shape_is_a_clear_error(tmp_path):
    model = RecurrentMemoryModel.wrap(tiny_causal_lm(hidden=32), RMTConfig(num_mem_tokens=2, segment_size=8))
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(AdapterError, match="wrong base model"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm(hidden=48))


def test_lora_on_other_base_is_a_clear_error(tmp_path):
    base = get_peft_model(tiny_causal_lm(hidden=32), LoraConfig(r=4, target_modules=["q_proj"]))
    RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=8)).save_pretrained(tmp_path / "m")
    with pytest.raises(AdapterError, match="does not fit this base model"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm(hidden=48))


def test_atomic_directory_keeps_previous_on_failure(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.json").write_text(json.dumps(1))
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.json").write_text(json.dumps(2))
            raise RuntimeError("crash mid-save")
    assert json.loads((target / "a.json").read_text()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


@pytest.mark.parametrize("failing_rename", [0, 1])  # moving the old one aside / the new one in
def test_atomic_directory_cleans_up_when_a_rename_fails(tmp_path, monkeypatch, failing_rename):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.json").write_text("old")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) - 1 == failing_rename:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        with atomic_directory(target) as tmp:
            (tmp / "a.json").write_text("new")
    assert (target / "a.json").read_text() == "old"  # the previous directory is back in place
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # and no temporary is left


def test_atomic_directory_of_a_relative_dot_path_writes_beside_it(tmp_path, monkeypatch):
    # "." has no name: the temporary directory must go beside the folder, not inside it.
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with atomic_directory("../out/") as tmp:
        assert tmp.parent == tmp_path
        (tmp / "a.json").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "out"]


@pytest.fixture
def lora_dir(tmp_path):
    base = get_peft_model(tiny_causal_lm(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model = trained_like(RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=8)))
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m", model


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_get_the_users_modes(lora_dir, tmp_path, umask):
    _, model = lora_dir
    previous = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / "out", extra_files=lambda tmp: (tmp / "sub").mkdir())
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "out", *(tmp_path / "out").rglob("*")]}
    # safetensors and mkdtemp alone would make adapter_model.safetensors 0600 and the folder 0700.
    assert {"out", "sub", "adapter_model.safetensors", "memory.safetensors", "rmt_config.json"} <= set(modes)
    assert modes.pop("out") == modes.pop("sub") == 0o777 & ~umask
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_read_adapter_gives_the_pieces(lora_dir):
    path, model = lora_dir
    saved = read_adapter(path, tiny_causal_lm())
    assert saved.config == model.config
    torch.testing.assert_close(saved.memory, model.memory.detach())
    assert hasattr(saved.base, "peft_config")  # the LoRA adapter is attached


def test_saving_does_not_import_the_model_class():
    tree = ast.parse(Path(saving.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "rmt_scale.model.recurrent" not in modules
    # Nor is it handed the class to build (the old `load_memory_model(cls, ...)`).
    assert not [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                and any(arg.arg == "cls" for arg in node.args.args)]


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "adapter_config.json").write_text("{not json"), "adapter_config.json: not valid JSON"),
    (lambda p: (p / "adapter_config.json").write_text("[1, 2]"), "adapter_config.json: expected a JSON object"),
    (lambda p: (p / "adapter_config.json").write_text('{"r": 4}'), "not a PEFT adapter config (no peft_type)"),
    (lambda p: (p / "adapter_config.json").write_text('{"peft_type": "NOPE"}'), "cannot read the adapter config"),
    (lambda p: (p / "adapter_model.safetensors").unlink(), "adapter_model.safetensors: LoRA weights missing"),
    (lambda p: (p / "adapter_model.safetensors").write_bytes(b"\x10" * 30), "unreadable or truncated"),
    (lambda p: (p / "rmt_base.json").write_text("{"), "rmt_base.json: not valid JSON"),
    # Types PEFT itself does not check: a TypeError deep inside the layers before (issue 11).
    (lambda p: (p / "adapter_config.json").write_text(
        json.dumps({**json.loads((p / "adapter_config.json").read_text()), "r": "eight"})),
     "adapter_config.json: r must be a number, got 'eight'"),
    (lambda p: (p / "rmt_base.json").write_text('{"base_model_name_or_path": 7}'),
     "rmt_base.json: base_model_name_or_path must be a path or a model id"),
])
def test_a_damaged_adapter_names_the_damage_not_the_base(lora_dir, damage, message):
    path, _ = lora_dir
    damage(path)
    # rmt_base.json is read only when no base is given.
    base = None if "rmt_base" in message else tiny_causal_lm()
    with pytest.raises(AdapterError) as caught:
        RecurrentMemoryModel.from_pretrained(path, base)
    assert message in str(caught.value) and "base model" not in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_memory_is_an_adapter_error(lora_dir, value):
    path, model = lora_dir
    memory = model.memory.detach().clone()
    memory[0, 0] = value
    save_file({"memory": memory}, str(path / "memory.safetensors"))
    with pytest.raises(AdapterError, match="NaN or inf"):
        RecurrentMemoryModel.from_pretrained(path, tiny_causal_lm())
