"""The optional write settings (both off by default, the reference RMT unchanged):
`write_inputs="initial"` feeds the learned initial memory to the write positions of every segment
instead of a copy of the read memory; `write_exclude_special` keeps the base's special tokens out of
the soft-token write's distribution.
"""

from __future__ import annotations

import pytest
import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import AdapterError, ConfigError
from rmt_scale.model.memory import special_token_ids
from tests.tiny_models import tiny_causal_lm

M, S = 3, 8


def wrapped(**kwargs) -> RecurrentMemoryModel:
    return RecurrentMemoryModel.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=M, segment_size=S, **kwargs))


def test_defaults_are_the_reference_write():
    config = RMTConfig()
    assert config.write_inputs == "read" and config.write_exclude_special is False
    model = wrapped()
    memory = torch.randn(2, M, model.memory.shape[-1])
    embeds, _, _ = model.cell.embed(memory, torch.randint(4, 64, (2, S)), None, write=True)
    torch.testing.assert_close(embeds[:, -M:], memory)  # the write copy is the read memory


def test_initial_write_inputs_are_the_learned_memory_in_every_segment():
    reference, fixed = wrapped(), wrapped(write_inputs="initial")
    read = torch.randn(2, M, fixed.memory.shape[-1])
    embeds, _, _ = fixed.cell.embed(read, torch.randint(4, 64, (2, S)), None, write=True)
    torch.testing.assert_close(embeds[:, :M], read)  # the read memory is read as before ...
    torch.testing.assert_close(embeds[:, -M:], fixed.memory.expand(2, M, -1))  # ... the write slots are the queries
    ids = torch.randint(4, 64, (2, 3 * S))
    out, out_ref = fixed(ids, labels=ids, return_logits=True), reference(ids, labels=ids, return_logits=True)
    # Segments 1 and 2 are the reference ones (segment 1 writes from the initial memory either way);
    # from segment 3 on the memory differs.
    torch.testing.assert_close(out.logits[:, : 2 * S], out_ref.logits[:, : 2 * S])
    assert not torch.allclose(out.logits[:, 2 * S :], out_ref.logits[:, 2 * S :])


def test_initial_write_inputs_pass_gradient_to_the_initial_memory_from_every_write():
    """With a loss on segment 3 only, the initial memory gets gradient through segment 2's write
    slots too, not only through segment 1's read."""
    ids = torch.randint(4, 64, (2, 3 * S))
    labels = ids.clone()
    labels[:, : 2 * S] = -100
    grads = {}
    for inputs in ("read", "initial"):
        model = wrapped(memory_norm="embedding", write_inputs=inputs)
        model(ids, labels=labels).loss.backward()
        grads[inputs] = model.memory.grad.clone()
    assert grads["initial"].abs().sum() > 0
    assert not torch.allclose(grads["initial"], grads["read"])


def test_special_token_ids_come_from_the_config():
    config = tiny_causal_lm("llama").config
    assert special_token_ids(config) == [0, 1, 2]  # pad 0, bos 1, eos 2
    config.eos_token_id = [2, 5]
    config.unk_token_id = None
    assert special_token_ids(config) == [0, 1, 2, 5]


def test_excluded_special_tokens_get_no_weight_in_the_soft_token_write():
    soft = wrapped(memory_norm="soft_token")
    masked = wrapped(memory_norm="soft_token", write_exclude_special=True)
    hidden = torch.randn(2, M, soft.memory.shape[-1])
    embeddings = soft.base.get_input_embeddings().weight
    logits = soft.cell.lm_head(hidden)
    logits[..., [0, 1, 2]] = float("-inf")
    expected = torch.softmax(logits, dim=-1) @ embeddings
    torch.testing.assert_close(masked.cell.scale_written(hidden), expected)
    assert not torch.allclose(soft.cell.scale_written(hidden), expected)


def test_write_options_are_checked_and_saved(tmp_path):
    with pytest.raises(ConfigError, match="write_inputs must be one of"):
        RMTConfig(write_inputs="queries")
    with pytest.raises(ConfigError, match="write_exclude_special must be true or false"):
        RMTConfig(memory_norm="soft_token", write_exclude_special="yes")
    with pytest.raises(ConfigError, match="soft_token only"):
        RMTConfig(write_exclude_special=True)
    model = wrapped(memory_norm="soft_token", write_inputs="initial", write_exclude_special=True)
    model.save_pretrained(tmp_path / "adapter")
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "adapter", base=tiny_causal_lm("llama"))
    assert loaded.config.write_inputs == "initial" and loaded.config.write_exclude_special
    ids = torch.randint(4, 64, (1, 3 * S))
    torch.testing.assert_close(loaded(ids, labels=ids).loss, model(ids, labels=ids).loss)
    # A saved setting that does not validate is an error naming the adapter's file.
    config_file = tmp_path / "adapter" / "rmt_config.json"
    config_file.write_text(config_file.read_text().replace('"initial"', '"queries"'))
    with pytest.raises(AdapterError, match=r"rmt_config\.json: write_inputs must be one of"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "adapter", base=tiny_causal_lm("llama"))
