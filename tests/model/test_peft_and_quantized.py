"""The memory wrapper over a PEFT LoRA base and over a 4-bit bitsandbytes base (QLoRA)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from rmt_scale import RecurrentMemoryModel, RMTConfig
from tests.tiny_models import tiny_causal_lm

LORA_TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"],
                "qwen2": ["q_proj", "v_proj"]}


def lora(base, arch):
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS[arch], lora_dropout=0.0))


def test_lora_base_trains_memory_and_adapters_only(arch):
    model = RecurrentMemoryModel.wrap(lora(tiny_causal_lm(arch), arch), RMTConfig(num_mem_tokens=2, segment_size=8)).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "cell.memory" in trainable
    assert all(n == "cell.memory" or "lora_" in n for n in trainable)
    ids = torch.randint(3, 64, (2, 20))
    model(ids, labels=ids).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "cell.memory" in grads and any("lora_B" in n for n in grads)


def test_lora_with_zero_init_b_equals_plain_base(arch):
    """Fresh LoRA (B = 0) changes nothing: the wrapper really runs the PEFT-injected modules."""
    plain = RecurrentMemoryModel.wrap(tiny_causal_lm(arch), RMTConfig(num_mem_tokens=2, segment_size=8))
    adapted = RecurrentMemoryModel.wrap(lora(tiny_causal_lm(arch), arch), RMTConfig(num_mem_tokens=2, segment_size=8))
    ids = torch.randint(3, 64, (1, 20))
    torch.testing.assert_close(plain(ids, labels=ids).loss, adapted(ids, labels=ids).loss)
    # ... and a non-zero B changes the result.
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.fill_(0.1)
    assert not torch.allclose(plain(ids, labels=ids).loss, adapted(ids, labels=ids).loss)


def test_4bit_base_qlora(tmp_path):
    pytest.importorskip("bitsandbytes")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tiny_causal_lm("llama", hidden=64).save_pretrained(tmp_path)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quantization, device_map="cpu")
    assert type(base.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    model = RecurrentMemoryModel.wrap(lora(base, "llama"), RMTConfig(num_mem_tokens=2, segment_size=8)).train()
    ids = torch.randint(3, 64, (2, 20))
    out = model(ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.memory.grad.abs().sum() > 0
    assert model.generate(ids, max_new_tokens=3).shape == (2, 3)
