"""Memory-state files: round trip, refusal by any other model, corrupt and truncated files, and
answers from a saved state equal to answers from reading the whole input at once."""

from __future__ import annotations

import json

import pytest
import torch

from rmt_scale.errors import MemoryStateError
from rmt_scale.serving import MemoryReader, ModelIdentity, load_state, read_state_info, save_state
from tests.serving.conftest import save_adapter

SOURCES = [{"name": "book.txt", "sha256": "0" * 64, "tokens": 0}]


@pytest.fixture
def saved(tmp_path, reader, document):
    state = reader.read_text(document)
    path = tmp_path / "book.state"
    save_state(path, state, reader.identity, [{**SOURCES[0], "tokens": state.tokens_read}])
    return path, state


def test_round_trip(saved, reader):
    path, state = saved
    loaded, info = load_state(path, reader.identity)
    assert torch.equal(loaded.memory, state.memory) and loaded.memory.dtype == state.memory.dtype
    assert torch.equal(loaded.tail_ids, state.tail_ids)
    assert loaded.tokens_read == state.tokens_read == info.tokens_read > 100
    assert info.unread_tokens == state.tail_ids.numel()
    assert info.sources[0]["name"] == "book.txt" and info.created and info.updated
    assert read_state_info(path).identity == info.identity
    assert json.loads(info.identity["rmt_config"]) == {"num_mem_tokens": 2, "segment_size": 16, "memory_norm": None}
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_answers_from_a_saved_state_equal_answers_from_reading_everything(saved, reader, document):
    path, _ = saved
    state, _ = load_state(path, reader.identity)
    questions = ["Where is Mary?", "Who wrote a letter?"]
    prompts = [reader.question_prompt(q) for q in questions]
    answers = reader.complete([state, state], prompts, max_new_tokens=8)
    for prompt, answer in zip(prompts, answers):
        ids = torch.cat([reader.encode(document, document_start=True), reader.encode(prompt, document_start=False)])
        whole = reader.model.generate(ids.unsqueeze(0), max_new_tokens=8)[0]
        expected = reader.completion(whole.tolist(), 0, ())
        assert answer.text == expected.text and answer.completion_tokens == expected.completion_tokens
    assert answers[0].prompt_tokens == reader.encode(prompts[0], document_start=False).numel()


@pytest.mark.parametrize("other", ["adapter", "segment_size", "dtype", "tokenizer"])
def test_a_state_of_another_model_is_refused(saved, reader, tmp_path, adapter_dir, base_dir, tokenizer, other):
    path, _ = saved
    if other == "adapter":
        identity = MemoryReader.load(save_adapter(tmp_path / "other", base_dir, tokenizer, seed=2)).identity
        reason = "another LoRA adapter"
    elif other == "segment_size":
        adapter = save_adapter(tmp_path / "other", base_dir, tokenizer, seed=1, segment_size=24)
        identity = MemoryReader.load(adapter).identity
        reason = r"another RMT config: segment_size=16 \(this model: 24\)"
    elif other == "dtype":
        identity = MemoryReader.load(adapter_dir, dtype="bfloat16").identity
        reason = "in float32 but this model runs in bfloat16"
    else:
        from tests.bpe import byte_level_bpe

        other_tokenizer = byte_level_bpe(["something else entirely"] * 5, 280, pad_token="<pad>", eos_token="<eos>")
        identity = ModelIdentity.of(reader.model, other_tokenizer)
        reason = "another tokenizer"
    with pytest.raises(MemoryStateError, match=f"does not fit the model: it was read .*{reason}"):
        load_state(path, identity)


def test_same_architecture_other_base_weights_is_refused(saved, tmp_path, adapter_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from rmt_scale import RecurrentMemoryModel
    from tests.tiny_models import tiny_causal_lm

    path, _ = saved
    tiny_causal_lm("llama", seed=5, vocab_size=len(tokenizer), max_positions=256).save_pretrained(tmp_path / "b")
    model = RecurrentMemoryModel.from_pretrained(adapter_dir, AutoModelForCausalLM.from_pretrained(tmp_path / "b"))
    with pytest.raises(MemoryStateError, match="another base model"):
        load_state(path, ModelIdentity.of(model, tokenizer))


def test_corrupt_truncated_and_foreign_files_are_clear_errors(saved, reader, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    flipped = bytearray(data)
    flipped[header + 3] ^= 0xFF  # one byte of the memory tensor
    cases = {
        "flipped": (bytes(flipped), "do not match their checksum"),
        "truncated": (data[: len(data) - 5], "unreadable or truncated"),
        "header cut": (data[: header - 10], "not a memory state file, or truncated"),
        "tiny": (data[:4], "not a memory state file, or truncated"),
        "empty": (b"", "not a memory state file, or truncated"),
        "text": (b"hello world, not safetensors at all", "not a memory state file"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.state"
        bad.write_bytes(content)
        with pytest.raises(MemoryStateError, match=message):
            load_state(bad, reader.identity)
    from safetensors.torch import save_file

    save_file({"memory": torch.zeros(2, 32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(MemoryStateError, match="no 'rmt-scale-memory-state' marker"):
        load_state(tmp_path / "plain.safetensors", reader.identity)
    with pytest.raises(MemoryStateError, match="no such memory state file"):
        load_state(tmp_path / "missing.state", reader.identity)
    newer = data.replace(b'"format_version":"1"', b'"format_version":"9"')
    assert newer != data
    (tmp_path / "newer.state").write_bytes(newer)
    with pytest.raises(MemoryStateError, match="version '9' is not supported"):
        load_state(tmp_path / "newer.state", reader.identity)
