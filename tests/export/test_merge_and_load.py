"""Adapter directories without DeepSpeed: merge vs unmerged logits, load with the recorded base,
bad bases and missing files (tiny random Llama, built in memory).

Tolerance: merged vs unmerged logits within 1e-5 absolute (fp32; merging only reorders the LoRA
sum W x + B A x into (W + B A) x).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.cli.main import main
from rmt_scale.errors import AdapterError
from rmt_scale.export.merge import merge_adapter
from tests.tiny_models import tiny_causal_lm

TOLERANCE = 1e-5


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(ids, return_logits=True).logits


@pytest.fixture
def adapter(tmp_path):
    """An adapter dir with a trained-looking LoRA (+ a fully trained lm_head) and memory, whose
    base is saved beside it as `base/` (recorded relative, as `rmt-scale export` does)."""
    tiny_causal_lm().save_pretrained(tmp_path / "b")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]))
    model = RecurrentMemoryModel.wrap(peft, RMTConfig(num_mem_tokens=2, segment_size=8))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    path = tmp_path / "adapter_src"
    model.save_pretrained(path, base_model_name_or_path="base")
    shutil.move(tmp_path / "b", path / "base")  # after the save: it replaces the whole directory
    return path, model


def test_relative_base_and_merge_give_the_same_logits(adapter, tmp_path):
    path, model = adapter
    ids = torch.randint(3, 64, (2, 29), generator=torch.Generator().manual_seed(0))
    loaded = RecurrentMemoryModel.from_pretrained(path)  # base from rmt_base.json: "base" beside it
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), atol=0, rtol=0)
    merge_adapter(path, tmp_path / "merged")
    merged_dir = tmp_path / "merged"
    assert json.loads((merged_dir / "rmt_base.json").read_text())["base_model_name_or_path"] == "."
    assert not (merged_dir / "adapter_config.json").exists()
    merged = RecurrentMemoryModel.from_pretrained(merged_dir)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    diff = (logits(merged, ids) - logits(model, ids)).abs().max()
    assert diff <= TOLERANCE
    # A plain causal LM without memory, from the same directory.
    AutoModelForCausalLM.from_pretrained(merged_dir)


def test_wrong_base_is_a_clear_error_and_writes_nothing(adapter, tmp_path, capsys):
    path, _ = adapter
    tiny_causal_lm(hidden=48).save_pretrained(tmp_path / "other")
    with pytest.raises(AdapterError, match="does not fit this base"):
        RecurrentMemoryModel.from_pretrained(path, base_model_name_or_path=str(tmp_path / "other"))
    code = main(["merge", "--adapter", str(path), "--out", str(tmp_path / "m"), "--base", str(tmp_path / "other")])
    assert code == 2 and "error: " in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.tmp-*"))


def test_missing_memory_or_base(adapter, tmp_path, capsys):
    path, _ = adapter
    (path / "memory.safetensors").unlink()
    code = main(["merge", "--adapter", str(path), "--out", str(tmp_path / "m")])
    assert code == 2 and "memory file missing" in capsys.readouterr().err and not (tmp_path / "m").exists()
    (path / "rmt_base.json").write_text(json.dumps({"base_model_name_or_path": "/nowhere"}))
    with pytest.raises(AdapterError, match="not a local directory"):
        merge_adapter(path, tmp_path / "m")


def test_out_exists_needs_overwrite(adapter, tmp_path, capsys):
    path, _ = adapter
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep").write_text("x")
    assert main(["merge", "--adapter", str(path), "--out", str(tmp_path / "m")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "m" / "keep").exists()


def test_full_finetune_modules_round_trip(tmp_path):
    base = tiny_causal_lm()
    base.requires_grad_(False)
    base.lm_head.requires_grad_(True)
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=8))
    with torch.no_grad():
        base.lm_head.weight.add_(1.0)
    model.save_pretrained(tmp_path / "m", finetuned_modules=["lm_head"])
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "m" / "finetuned_modules.safetensors"))) == {"lm_head.weight"}
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "m", tiny_causal_lm())
    torch.testing.assert_close(loaded.cell.causal_lm.lm_head.weight, base.lm_head.weight)
