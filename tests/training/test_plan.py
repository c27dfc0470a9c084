"""The run plan: built once per launch, from config files only (no weights), refusing a resume
whose model/rmt/lora/data differ from the checkpoint's; and a whole one-process run in-process,
whose output_dir/final is what `rmt-scale export` writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rmt_scale import distributed
from rmt_scale.errors import ConfigError
from rmt_scale.training import build, run_dir
from rmt_scale.training import plan as plan_module
from rmt_scale.training.config import BatchConfig, load_train_config
from rmt_scale.training.curriculum import Curriculum
from rmt_scale.training.plan import build_plan, config_changes
from tests.training.helpers import free_port, keep_logging

# The tiny recipe, 2 stages x 2 steps of a global batch of 4 on one process.
FEW = ["curriculum.stages.0.steps=2", "curriculum.stages.1.steps=2", "curriculum.stages.1.advance=null",
       "checkpoint.every_steps=0", "checkpoint.keep_last=0", "batch.micro_batch_size=2",
       "batch.global_batch_size=4", "eval.every_steps=0", "data.num_samples=16", "data.valid_samples=4",
       "logging.progress_bar=false", "logging.tensorboard=false"]


def tiny(tmp_path, *overrides):
    return load_train_config("tiny", [*FEW, f"output_dir={tmp_path / 'run'}", *overrides])


def test_the_plan_has_the_stage_table_and_fills_the_json_once(tmp_path):
    plan = build_plan(tiny(tmp_path, "curriculum.stages.1.vary_n_segments=false"), "tiny", world_size=2)
    assert (plan.micro_batch, plan.grad_accum, plan.global_batch) == (2, 1, 4)
    assert plan.ds_config["train_batch_size"] == 4 and plan.ds_config["gradient_accumulation_steps"] == 1
    assert plan.ds_config["zero_optimization"]["reduce_bucket_size"] == 64 * 64  # the real width
    # tokens = steps x global batch x segments x segment_size
    assert [(s.num_segments, s.steps, s.tokens, s.exact) for s in plan.stages] == [(1, 2, 128, True),
                                                                                    (2, 2, 256, True)]
    assert [s.status for s in plan.stages] == ["this launch", "this launch"]
    assert not plan.finished() and plan.resume_from is None and plan.final_dir == tmp_path / "run" / "final"


def test_the_base_width_comes_from_config_json_without_weights(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    base = tmp_path / "base"
    LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=64).save_pretrained(base)  # config.json only
    monkeypatch.setattr(build, "load_base", lambda *a, **k: pytest.fail("the plan loaded weights"))
    plan = build_plan(tiny(tmp_path, "model.init=pretrained", f"model.path={base}"), world_size=1)
    assert plan.hidden_size == 48 and plan.ds_config["zero_optimization"]["reduce_bucket_size"] == 48 * 48
    with pytest.raises(ConfigError, match="ZeRO-3 cannot partition 4-bit weights"):
        build_plan(tiny(tmp_path, "model.init=pretrained", f"model.path={base}", "model.load_in_4bit=true",
                        "deepspeed=zero3"), world_size=1)


def fake_checkpoint(config, step=2, stage=0, step_in_stage=2):
    """A complete checkpoint written by `config` (no DeepSpeed files: the plan does not read them)."""
    root = run_dir.checkpoint_root(config.output_dir)
    tmp, final = run_dir.checkpoint_paths(config.output_dir, step)
    tmp.mkdir(parents=True)
    state = {"curriculum": {"stage": stage, "step_in_stage": step_in_stage, "global_step": step},
             "world_size": 1, "zero_stage": 2}
    run_dir.finish_checkpoint(tmp, final, state, config.to_yaml())
    assert run_dir.latest_checkpoint(config.output_dir) == final and root.is_dir()
    return final


def test_a_resume_with_another_model_rmt_lora_or_data_is_refused(tmp_path):
    checkpoint = fake_checkpoint(tiny(tmp_path))
    changed = tiny(tmp_path, "lora.r=4", "data.num_samples=99", "rmt.num_mem_tokens=2", "optimizer.lr=1e-2")
    assert config_changes(tiny(tmp_path), changed) == ["rmt.num_mem_tokens", "lora.r", "data.num_samples"]
    with pytest.raises(ConfigError) as caught:
        build_plan(changed, world_size=1)
    message = str(caught.value)
    assert "\n" not in message and str(checkpoint) in message and "resume_allow_changes=true" in message
    assert "rmt.num_mem_tokens, lora.r, data.num_samples" in message
    # The explicit key allows it; a run's own settings (optimizer, schedule, ...) may always change.
    plan = build_plan(tiny(tmp_path, "lora.r=4", "resume_allow_changes=true"), world_size=1)
    assert plan.resume_from == checkpoint and plan.state.step_in_stage == 2
    assert plan.stages[0].status == "resumes at step 2"
    assert build_plan(tiny(tmp_path, "optimizer.lr=1e-2", "rmt.segment_checkpointing=false",
                           "model.gradient_checkpointing=true"), world_size=1).resume_from == checkpoint


def test_resume_on_another_world_size_plans_a_universal_load(tmp_path):
    fake_checkpoint(tiny(tmp_path))
    plan = build_plan(tiny(tmp_path), world_size=2)
    assert plan.universal and plan.ds_config["checkpoint"]["load_universal"] is True
    assert "through DeepSpeed's universal format" in plan.describe()


@pytest.fixture
def one_process(monkeypatch):
    """The environment of a one-rank launch; logging as it was afterwards."""
    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    yield from keep_logging()


def counted(monkeypatch, owner, name, counts):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_one_launch_plans_once_and_final_is_the_export(tmp_path, monkeypatch, capsys, one_process):
    from rmt_scale.cli import train_worker
    from rmt_scale.export.adapter import export_checkpoint

    counts: dict[str, int] = {}
    counted(monkeypatch, distributed, "fill_ds_config", counts)
    counted(monkeypatch, Curriculum, "__init__", counts)
    counted(monkeypatch, BatchConfig, "resolve", counts)
    counted(monkeypatch, plan_module, "base_hidden_size", counts)
    run = tmp_path / "run"
    assert train_worker.main(["--config", "tiny", *FEW, f"output_dir={run}"]) == 0
    assert counts == {"fill_ds_config": 1, "__init__": 1, "resolve": 1, "base_hidden_size": 1}
    err = capsys.readouterr().err
    assert "run plan" in err and '"train_batch_size": 4' in err and "final adapter" in err

    final = run / "final"
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "memory.safetensors", "rmt_config.json",
            "rmt_base.json", "README.md", "training_config.yaml", "trainer_state.json", "base"} <= names
    assert json.loads((final / "rmt_base.json").read_text())["base_model_name_or_path"] == "base"
    assert (final / "base" / "config.json").is_file()  # the random base, rebuilt from its seed
    assert "All stages done" in (final / "README.md").read_text()
    # Exactly what `rmt-scale export` writes from the same checkpoint.
    checkpoint = run_dir.latest_checkpoint(run)
    assert checkpoint.name == "checkpoint-000004"
    export_checkpoint(checkpoint, tmp_path / "exported")
    assert {p.name for p in (tmp_path / "exported").iterdir()} == names
    assert (tmp_path / "exported" / "README.md").read_text() == (final / "README.md").read_text()
    for name in ("adapter_model.safetensors", "memory.safetensors"):
        ours, theirs = load_file(str(final / name)), load_file(str(tmp_path / "exported" / name))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_resumed_run_with_changes_stops_with_one_line(tmp_path, capsys, one_process):
    from rmt_scale.cli import train_worker

    fake_checkpoint(tiny(tmp_path))
    assert train_worker.main(["--config", "tiny", *FEW, f"output_dir={tmp_path / 'run'}", "lora.alpha=3"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: resume from ") and "lora.alpha" in lines[-1]
