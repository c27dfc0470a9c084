"""Merging an adapter whose base checkpoint is stored 4-bit: dequantized, with a clear message."""

from __future__ import annotations

import logging

import pytest
import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from tests.tiny_models import tiny_causal_lm


def test_merge_into_a_4bit_base(tmp_path, caplog):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from rmt_scale.export.merge import merge_adapter

    tiny_causal_lm("llama", hidden=64).save_pretrained(tmp_path / "fp32")
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    quantized = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32", quantization_config=quantization,
                                                     device_map="cpu")
    quantized.save_pretrained(tmp_path / "base4bit")

    # The adapter is trained on (and recorded against) the 4-bit checkpoint.
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base4bit", device_map="cpu")
    model = RecurrentMemoryModel.wrap(
        get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)),
        RMTConfig(num_mem_tokens=2, segment_size=8),
    )
    model.save_pretrained(tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base4bit"))

    with caplog.at_level(logging.WARNING):
        merged_dir = merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    assert "dequantizing it for merging" in caplog.text
    merged = RecurrentMemoryModel.from_pretrained(merged_dir)
    assert getattr(merged.base.config, "quantization_config", None) is None

    # Reference: the same adapter on the dequantized base, unmerged.
    dequantized = AutoModelForCausalLM.from_pretrained(tmp_path / "base4bit", device_map="cpu").dequantize()
    reference = RecurrentMemoryModel.from_pretrained(tmp_path / "adapter", base=dequantized.float())
    ids = torch.randint(3, 64, (1, 24))
    torch.testing.assert_close(merged(ids, labels=ids).loss, reference(ids, labels=ids).loss, rtol=1e-4, atol=1e-4)
