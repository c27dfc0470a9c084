"""Bad configurations and unsupported models get one clear error."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    LlamaForCausalLM,
    LlamaModel,
    T5Config,
    T5ForConditionalGeneration,
)

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import ConfigError, UnsupportedModelError
from tests.tiny_models import tiny_causal_lm, tiny_config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(segment_size=0), "segment_size must be a positive"),
        (dict(segment_size=-4), "segment_size must be a positive"),
        (dict(num_mem_tokens=-1), "num_mem_tokens must be >= 0"),
        (dict(num_mem_tokens=2.5), "num_mem_tokens must be an integer"),
        (dict(bptt_depth=-1), "bptt_depth must be None"),
        (dict(segment_checkpointing="yes"), "segment_checkpointing must be true or false"),
        (dict(memory_init_std=0), "memory_init_std must be > 0"),
    ],
)
def test_bad_rmt_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RMTConfig(**kwargs)


def test_unknown_config_key_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid keys are .*segment_size"):
        RMTConfig.from_dict({"segment_len": 5})


def test_segment_longer_than_base_positions():
    base = tiny_causal_lm("llama", max_positions=64)
    with pytest.raises(ConfigError, match="exceeds LlamaForCausalLM's maximum of 64 positions"):
        RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=8, segment_size=49))
    RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=8, segment_size=48))  # exactly fits


def test_gpt2_positions_checked_too():
    base = tiny_causal_lm("gpt2", max_positions=32)
    with pytest.raises(ConfigError, match="maximum of 32 positions"):
        RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=1, segment_size=31))


def test_encoder_only_model_rejected():
    bert = BertForMaskedLM(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32))
    with pytest.raises(UnsupportedModelError, match="not a causal language model"):
        RecurrentMemoryModel.wrap(bert, RMTConfig(num_mem_tokens=2, segment_size=8))


def test_encoder_decoder_model_rejected():
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        RecurrentMemoryModel.wrap(t5, RMTConfig(num_mem_tokens=2, segment_size=8))


def test_plain_module_rejected():
    with pytest.raises(UnsupportedModelError, match="not a Hugging Face model"):
        RecurrentMemoryModel.wrap(torch.nn.Linear(2, 2), RMTConfig())


class _IdsOnlyDecoder(LlamaModel):
    def forward(self, input_ids, attention_mask=None, position_ids=None):  # no inputs_embeds
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


class IdsOnlyLlamaForCausalLM(LlamaForCausalLM):
    def __init__(self, config):
        super().__init__(config)
        self.model = _IdsOnlyDecoder(config)


def test_model_without_inputs_embeds_rejected():
    model = IdsOnlyLlamaForCausalLM(tiny_config("llama"))
    with pytest.raises(UnsupportedModelError, match="takes no inputs_embeds"):
        RecurrentMemoryModel.wrap(model, RMTConfig(num_mem_tokens=2, segment_size=8))


def test_bad_inputs(tiny_llama):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=2, segment_size=8))
    with pytest.raises(ValueError, match="input_ids must be"):
        model(torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels shape"):
        model(torch.ones(1, 5, dtype=torch.long), labels=torch.ones(1, 4, dtype=torch.long))
    ids = torch.ones(2, 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"samples \[1\] have no tokens"):
        model(ids, attention_mask=mask)
    with pytest.raises(ValueError, match="max_new_tokens must be positive"):
        model.generate(ids, max_new_tokens=0)


def test_generation_beyond_positions_is_a_clear_error():
    base = tiny_causal_lm("llama", max_positions=24)
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=16))
    with pytest.raises(ConfigError, match="generation needs 28 positions"):
        model.generate(torch.ones(1, 16, dtype=torch.long) * 5, max_new_tokens=10)
