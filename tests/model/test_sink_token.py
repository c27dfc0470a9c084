"""`sink_token`: off by default (the reference layout `[memory | tokens | memory]`); when set, that
token's embedding goes first in every segment and nothing else changes: the tokens and the write
memory are those of the base run on `[sink | memory | tokens | memory]`, padded batches still equal
each sample alone, generation, saving and memory states follow the setting."""

from __future__ import annotations

import pytest
import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import ConfigError
from rmt_scale.serving.state import ModelIdentity
from tests.model.test_recurrent import padded_batch
from tests.tiny_models import tiny_causal_lm

M, S, SINK = 3, 8, 2


def wrapped(**kwargs) -> RecurrentMemoryModel:
    return RecurrentMemoryModel.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=M, segment_size=S, **kwargs))


def test_off_by_default_and_first_when_set():
    assert RMTConfig().sink_token is None and RMTConfig().positions_per_segment() == 2 * 16 + 512
    model = wrapped(sink_token=SINK)
    assert model.config.positions_per_segment() == 2 * M + S + 1
    ids = torch.randint(4, 64, (2, S))
    memory = model.initial_memory(2)
    embedding = model.base.get_input_embeddings()
    sink = embedding(torch.full((2, 1), SINK))
    embeds = torch.cat([sink, memory, embedding(ids), memory], dim=1)
    hidden = model.base.get_decoder()(inputs_embeds=embeds, use_cache=False).last_hidden_state
    tokens, new = model.cell(memory, ids)
    torch.testing.assert_close(tokens, hidden[:, 1 + M : 1 + M + S])
    torch.testing.assert_close(new, hidden[:, 1 + M + S :])
    # Without the sink the same inputs give other states: the option is not a no-op.
    _, reference = wrapped().cell(memory, ids)
    assert not torch.allclose(new, reference)


def test_padded_batch_with_a_sink_matches_each_sample_alone():
    model = wrapped(sink_token=SINK, memory_norm="embedding")
    lengths = [29, 13, 6, 24]
    ids, mask, samples = padded_batch(lengths)
    out = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100), return_logits=True)
    new_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=4)
    seen = []
    model.generate(ids, attention_mask=mask, max_new_tokens=1, progress=seen.append)
    assert sum(seen) == sum(lengths)  # every real token counted once, the sink never
    for i, sample in enumerate(samples):
        alone = model(sample, labels=sample, return_logits=True)
        torch.testing.assert_close(out.sample_loss[i], alone.loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.logits[i, -lengths[i]:], alone.logits[0], rtol=1e-4, atol=1e-5)
        alone_tokens = model.generate(sample, max_new_tokens=4)[0]
        assert torch.equal(new_tokens[i, : len(alone_tokens)], alone_tokens)


def test_sink_is_validated_saved_and_part_of_a_state_identity(tmp_path):
    for bad in (-1, "bos", True, 1.5):
        with pytest.raises(ConfigError, match="sink_token must be null"):
            RMTConfig(sink_token=bad)
    with pytest.raises(ConfigError, match="sink_token 64 is not a token id"):
        wrapped(sink_token=64)  # the tiny Llama has 64 ids
    model = wrapped(sink_token=SINK)
    model.save_pretrained(tmp_path / "adapter")
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "adapter", base=tiny_causal_lm("llama"))
    assert loaded.config.sink_token == SINK
    ids = torch.randint(4, 64, (1, 3 * S))
    torch.testing.assert_close(loaded(ids, labels=ids).loss, model(ids, labels=ids).loss)
    assert '"sink_token": 2' in ModelIdentity.of(loaded).rmt_config
    assert "sink_token" not in ModelIdentity.of(wrapped()).rmt_config  # states saved before it stay valid


def test_no_memory_means_no_sink():
    model = RecurrentMemoryModel.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=0, segment_size=S, sink_token=SINK))
    ids = torch.randint(4, 64, (1, S))
    torch.testing.assert_close(model(ids, return_logits=True).logits, model.base(ids).logits)


def test_the_memory_attention_profile_accounts_for_all_attention():
    """benchmarks/memory_attention.py: per layer, the shares on sink, slot 0, other slots and tokens
    add up to all of the tokens' attention; without a sink token the sink gets none."""
    from benchmarks.memory_attention import attention_profile

    lm = tiny_causal_lm("llama")
    lm.config._attn_implementation = "eager"  # attention weights are returned by the eager path only
    model = RecurrentMemoryModel.wrap(lm, RMTConfig(num_mem_tokens=M, segment_size=S))
    ids = torch.randint(4, 64, (1, S))
    for sink in (None, SINK):
        rows = attention_profile(model, ids, sink)
        assert len(rows) == lm.config.num_hidden_layers
        for row in rows:
            assert abs(row["sink"] + row["slot0"] + row["slots"] + row["tokens"] - 1) < 1e-5
            assert (row["sink"] == 0 and row["norm_sink"] is None) if sink is None else row["sink"] > 0
