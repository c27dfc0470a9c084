"""`rmt-scale import-gguf` / `fetch-default`: GGUF checkpoints in, Hugging Face directories out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmt_scale.cli.main import main
from rmt_scale.errors import GGUFError
from rmt_scale.export.gguf import check_gguf


def write_small_gguf(path):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((8,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_valid_small_gguf_passes_the_check(tmp_path):
    assert check_gguf(write_small_gguf(tmp_path / "ok.gguf")) == 2


@pytest.mark.parametrize("keep", [100, -20])  # cut inside the header, and inside tensor data
def test_truncated_gguf(tmp_path, keep):
    data = write_small_gguf(tmp_path / "ok.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:keep])
    with pytest.raises(GGUFError, match="truncated"):
        check_gguf(bad)


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        check_gguf(bad)


def test_cli_reports_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(write_small_gguf(tmp_path / "ok.gguf").read_bytes()[:-20])
    assert main(["import-gguf", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "truncated" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main(["import-gguf", str(tmp_path / "missing.gguf"), str(tmp_path / "out")]) == 2


@pytest.mark.slow
def test_default_checkpoint_loads_and_answers(default_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmt_scale import RecurrentMemoryModel, RMTConfig

    assert (default_checkpoint / "model.safetensors").is_file()
    assert not (default_checkpoint / "pytorch_model.bin").exists()  # nothing to unpickle
    tokenizer = AutoTokenizer.from_pretrained(default_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(default_checkpoint)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    answer = tokenizer.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:])
    assert "Paris" in answer
    # With memory off and the prompt in one segment, the wrapper answers exactly as the base.
    rmt = RecurrentMemoryModel.wrap(model, RMTConfig(num_mem_tokens=0, segment_size=512))
    assert "Paris" in tokenizer.decode(rmt.generate(ids, max_new_tokens=12)[0])


@pytest.mark.slow
def test_truncated_real_gguf(tmp_path, default_checkpoint):
    from rmt_scale.export.default_model import default_gguf_path, fetch_default

    assert fetch_default() == default_checkpoint  # already complete: reused, not imported again
    real = default_gguf_path().read_bytes()
    for name, cut in (("half.gguf", len(real) // 2), ("last-bytes.gguf", len(real) - 1000)):
        bad = tmp_path / name
        bad.write_bytes(real[:cut])
        assert main(["import-gguf", str(bad), str(tmp_path / "out")]) == 2
        assert not (tmp_path / "out").exists()
