"""`memory_norm`: off by default (the written memory is the reference RMT's last hidden state, as is);
"embedding" rescales each written memory vector to the initial memory's RMS and changes nothing else;
"soft_token" writes the input embeddings mixed by each write position's next-token distribution.
The reference semantics of the default are also covered by the equivalence tests in test_recurrent.py.
"""

from __future__ import annotations

import pytest
import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import ConfigError
from tests.tiny_models import tiny_causal_lm

M, S = 3, 8


def wrapped(**kwargs) -> RecurrentMemoryModel:
    return RecurrentMemoryModel.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=M, segment_size=S, **kwargs))


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.float().pow(2).mean(-1).sqrt()


def test_default_writes_the_last_hidden_state_unchanged():
    model = wrapped()
    assert model.config.memory_norm is None
    ids = torch.randint(4, 64, (2, S))
    memory = model.initial_memory(2)
    embeds = torch.cat([memory, model.base.get_input_embeddings()(ids), memory], dim=1)
    hidden = model.base.get_decoder()(inputs_embeds=embeds, use_cache=False).last_hidden_state
    _, new = model.cell(memory, ids)
    torch.testing.assert_close(new, hidden[:, M + S :])
    # A post-final-norm state: far above the token embeddings' scale, the mismatch the option removes.
    assert rms(new).mean() > 10 * model.base.get_input_embeddings().weight.std()


@pytest.mark.parametrize("init_std", [1.0, 0.1])
def test_embedding_norm_rescales_every_written_memory_only(init_std):
    reference, normed = wrapped(memory_init_std=init_std), wrapped(memory_init_std=init_std, memory_norm="embedding")
    target = reference.base.get_input_embeddings().weight.std().item() * init_std
    ids = torch.randint(4, 64, (2, 4 * S))
    out_ref = reference(ids, labels=ids, return_logits=True)
    out = normed(ids, labels=ids, return_logits=True)
    # The first segment reads the same initial memory in both, so its logits agree ...
    torch.testing.assert_close(out.logits[:, :S], out_ref.logits[:, :S])
    # ... and later segments read a memory of another scale, so theirs differ.
    assert not torch.allclose(out.logits[:, S:], out_ref.logits[:, S:])
    torch.testing.assert_close(rms(out.memory), torch.full((2, M), target), rtol=1e-4, atol=0)
    # After one segment the written memory is the reference one, rescaled per vector.
    _, ref_new = reference.cell(reference.initial_memory(2), ids[:, :S])
    _, new = normed.cell(normed.initial_memory(2), ids[:, :S])
    torch.testing.assert_close(new, ref_new * (target / rms(ref_new)).unsqueeze(-1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("memory_norm", ["embedding", "soft_token"])
def test_memory_norm_is_validated_and_saved(tmp_path, memory_norm):
    with pytest.raises(ConfigError, match="memory_norm must be one of"):
        RMTConfig(memory_norm="layer")
    model = wrapped(memory_norm=memory_norm)
    model.save_pretrained(tmp_path / "adapter")
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "adapter", base=tiny_causal_lm("llama"))
    assert loaded.config.memory_norm == memory_norm
    ids = torch.randint(4, 64, (1, 3 * S))
    torch.testing.assert_close(loaded(ids, labels=ids).loss, model(ids, labels=ids).loss)


def test_soft_token_writes_the_embedding_mixture_of_the_next_token_distribution():
    reference, soft = wrapped(), wrapped(memory_norm="soft_token")
    ids = torch.randint(4, 64, (2, 3 * S))
    _, hidden = reference.cell(reference.initial_memory(2), ids[:, :S])  # the reference write: the last hidden state
    _, written = soft.cell(soft.initial_memory(2), ids[:, :S])
    embeddings = soft.base.get_input_embeddings().weight
    weights = torch.softmax(soft.base.get_output_embeddings()(hidden), dim=-1)
    torch.testing.assert_close(written, weights @ embeddings)
    # A convex combination of embedding rows: inside their range, coordinate by coordinate.
    assert (written <= embeddings.max(0).values + 1e-6).all() and (written >= embeddings.min(0).values - 1e-6).all()
    out, out_ref = soft(ids, labels=ids, return_logits=True), reference(ids, labels=ids, return_logits=True)
    torch.testing.assert_close(out.logits[:, :S], out_ref.logits[:, :S])  # segment 1 reads the initial memory
    assert not torch.allclose(out.logits[:, S:], out_ref.logits[:, S:])


def test_soft_token_write_is_differentiable():
    """Only segment 2 is scored, and the initial memory reaches it only through segment 1's soft
    write: a gradient on the initial memory has passed through the mixture."""
    model = wrapped(memory_norm="soft_token")
    ids = torch.randint(4, 64, (2, 2 * S))
    labels = ids.clone()
    labels[:, :S] = -100
    model(ids, labels=labels).loss.backward()
    assert model.memory.grad is not None and model.memory.grad.abs().sum() > 0

