"""Fixtures for the serving tests: tiny saved adapters (LoRA + memory) with an in-memory tokenizer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from rmt_scale import RecurrentMemoryModel, RMTConfig
from tests.bpe import byte_level_bpe
from tests.tiny_models import tiny_causal_lm

SEGMENT_SIZE = 16
# A chat template of the simplest kind: enough to show the chat endpoint formats with it.
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
TEXT = [
    "The lighthouse keeper wrote a letter to his sister every winter.",
    "Mary went to the kitchen. John moved to the garden. Where is Mary?",
    "Question: where is the apple? Answer: in the box",
    "The river ran slowly past the mill and the miller counted his sacks of flour.",
]


@pytest.fixture(scope="session")
def tokenizer():
    tok = byte_level_bpe(TEXT * 20, 300, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("serving") / "base"
    model = tiny_causal_lm("llama", vocab_size=len(tokenizer), max_positions=256)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_adapter(path, base_dir, tokenizer, seed: int, segment_size: int = SEGMENT_SIZE):
    """A LoRA + memory adapter on `base_dir` whose LoRA and memory values depend on `seed`."""
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    base = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=segment_size))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # as if trained: LoRA's B starts at 0, so an untrained adapter is the base
        for name, param in model.named_parameters():
            if name == "cell.memory" or "lora_" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    model.save_pretrained(path, base_model_name_or_path=str(base_dir),
                          extra_files=lambda out: tokenizer.save_pretrained(str(out)))
    return path


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory, base_dir, tokenizer):
    return save_adapter(tmp_path_factory.mktemp("serving") / "adapter", base_dir, tokenizer, seed=1)


@pytest.fixture(scope="session")
def reader(adapter_dir):
    from rmt_scale.serving import MemoryReader

    return MemoryReader.load(adapter_dir)


@pytest.fixture(scope="session")
def document() -> str:
    """About 150 tokens: ten segments of 16, so reading really goes through memory."""
    return " ".join(TEXT) + " " + " ".join(reversed(TEXT))


@contextmanager
def running_server(app) -> Iterator[str]:
    """serve_in_thread, checked to have stopped at the end."""
    from rmt_scale.serving.app import serve_in_thread

    threads = set(threading.enumerate())
    with serve_in_thread(app) as url:
        yield url
    assert not [t for t in set(threading.enumerate()) - threads if t.name == "rmt-scale-server"], \
        "the server did not stop"


@pytest.fixture(scope="module")
def server_dirs(tmp_path_factory, document):
    """(memory dir, allowed files dir) with book.txt inside the allowed dir and secret.txt beside it."""
    root = tmp_path_factory.mktemp("server")
    files = root / "files"
    files.mkdir()
    (files / "book.txt").write_text(document)
    (root / "secret.txt").write_text("not for clients")
    (files / "link.txt").symlink_to(root / "secret.txt")
    return root / "memories", files


# Small limits, so the tests reach them: a 64 KiB body, 32 new tokens, reads in chunks of 40 tokens.
TEST_LIMITS = dict(max_request_bytes=64 * 1024, max_new_tokens=32, max_prompt_tokens=200, read_chunk_tokens=40)


@pytest.fixture(scope="module")
def server(reader, server_dirs):
    from rmt_scale.serving.app import create_app
    from rmt_scale.serving.limits import ServerLimits

    memory_dir, files_dir = server_dirs
    with running_server(create_app(reader, memory_dir, files_dir, ServerLimits(**TEST_LIMITS))) as url:
        yield url
