"""`rmt-scale import-gguf` / `fetch-default`: GGUF checkpoints in, Hugging Face directories out."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from rmt_scale.cli.main import main
from rmt_scale.errors import GGUFError
from rmt_scale.export.gguf import COMPLETE_MARKER, check_gguf, import_gguf
from tests.export.gguf_files import (
    state_dict_of,
    tiny_llama_and_tokenizer,
    write_llama_gguf,
    write_t5_gguf,
)


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


# --- a whole tiny Llama in GGUF: imported exactly, or refused when incomplete (issue 11) -------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(folder, a complete GGUF of a tiny Llama, the model, its tokenizer)."""
    model, tokenizer = tiny_llama_and_tokenizer()
    folder = tmp_path_factory.mktemp("gguf")
    return folder, write_llama_gguf(folder / "tiny.gguf", model, tokenizer), model, tokenizer


def _one_line_error(capsys) -> str:
    """The error line: the last of stderr (progress bars of the load may precede it), the only one."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


def test_complete_gguf_imports_every_weight_exactly(tiny_gguf, tmp_path):
    from transformers import AutoTokenizer

    _, gguf_file, model, tokenizer = tiny_gguf
    out = import_gguf(gguf_file, tmp_path / "out")
    imported = state_dict_of(out)
    assert imported.keys() == model.state_dict().keys()
    assert all(torch.equal(imported[k], v) for k, v in model.state_dict().items())
    assert (out / COMPLETE_MARKER).is_file()
    text = "the cat sat on the mat"
    assert AutoTokenizer.from_pretrained(out)(text).input_ids == tokenizer(text).input_ids


def test_tied_embeddings_need_no_output_tensor(tmp_path):
    # llama.cpp leaves output.weight out of a model whose head is its embedding (SmolLM2): that
    # GGUF is complete, and a missing output.weight is never an error on its own.
    model, tokenizer = tiny_llama_and_tokenizer()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    gguf_file = write_llama_gguf(tmp_path / "tied.gguf", model, tokenizer)
    out = import_gguf(gguf_file, tmp_path / "out")
    assert torch.equal(state_dict_of(out)["model.embed_tokens.weight"], model.model.embed_tokens.weight)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True


@pytest.mark.parametrize("damage, message", [
    ({"drop": ["blk.0.attn_q.weight", "blk.1.ffn_up.weight", "output_norm.weight"]},
     r"3 weight\(s\) of the llama architecture are not in the file \(first: model.layers.0"),
    ({"reshape": ["blk.1.attn_v.weight"]},
     r"model.layers.1.self_attn.v_proj.weight has shape \(8, 32\) in the file but .* needs \(16, 32\)"),
    ({"merges": ["zz qq"]}, r"the tokenizer stored in this GGUF does not load \(.*out of vocabulary"),
    ({"merges": ["abc"]}, r"the tokenizer stored in this GGUF does not load"),
])
def test_damaged_gguf_is_one_line_and_writes_nothing(tiny_gguf, tmp_path, capsys, damage, message):
    _, _, model, tokenizer = tiny_gguf
    bad = write_llama_gguf(tmp_path / "bad.gguf", model, tokenizer, **damage)
    assert main(["import-gguf", str(bad), str(tmp_path / "out")]) == 2
    assert re.search(message, _one_line_error(capsys))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]  # no output, no temporary


def test_not_a_causal_lm_architecture(tmp_path, capsys):
    assert main(["import-gguf", str(write_t5_gguf(tmp_path / "t5.gguf")), str(tmp_path / "out")]) == 2
    assert "a t5 GGUF is not a decoder-only causal language model" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t5.gguf"]


# --- never delete the input, never replace someone's directory ------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_importing_into_the_gguf_folder_keeps_the_gguf(tiny_gguf, tmp_path, monkeypatch, capsys, overwrite):
    _, gguf_file, _, _ = tiny_gguf
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "m.gguf").write_bytes(gguf_file.read_bytes())
    before = (folder / "m.gguf").read_bytes()
    assert main(["import-gguf", str(folder / "m.gguf"), str(folder), *overwrite]) == 2
    assert "holds the input" in _one_line_error(capsys)
    monkeypatch.chdir(folder)  # `import-gguf m.gguf .`
    assert main(["import-gguf", "m.gguf", ".", *overwrite]) == 2
    assert ". holds the input m.gguf" in _one_line_error(capsys)
    assert [p.name for p in folder.iterdir()] == ["m.gguf"] and (folder / "m.gguf").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]  # no temporary folder beside it


def test_the_current_directory_is_never_replaced(tiny_gguf, tmp_path, monkeypatch, capsys):
    _, gguf_file, _, _ = tiny_gguf
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert main(["import-gguf", str(gguf_file), ".", "--overwrite"]) == 2
    assert "is the current directory" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any((tmp_path / "empty").iterdir())


def test_a_non_empty_output_needs_overwrite(tiny_gguf, tmp_path, capsys):
    _, gguf_file, _, _ = tiny_gguf
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["import-gguf", str(gguf_file), str(out)]) == 2
    assert "exists and is not empty; pass --overwrite" in _one_line_error(capsys)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("mine")
    assert main(["import-gguf", str(gguf_file), str(tmp_path / "file")]) == 2
    assert "is a file, not a directory" in _one_line_error(capsys)
    assert (tmp_path / "file").read_text() == "mine"
    assert main(["import-gguf", str(gguf_file), str(out), "--overwrite"]) == 0
    assert (out / COMPLETE_MARKER).is_file() and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]


def test_fetch_default_refuses_someone_elses_directory_before_downloading(tmp_path, monkeypatch, capsys):
    from rmt_scale.export import default_model

    def no_download():
        raise AssertionError("the output must be checked before anything is downloaded")

    monkeypatch.setattr(default_model, "download", no_download)
    monkeypatch.setenv("RMT_SCALE_HOME", str(tmp_path / "home"))
    out = tmp_path / "models"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        assert main(["fetch-default", "--out", str(out), *extra]) == 2
        assert "exists and is not empty; pass --overwrite" in _one_line_error(capsys)
    # The download cache is an input too: a directory that holds it is never replaced.
    assert main(["fetch-default", "--out", str(tmp_path / "home" / "models"), "--overwrite"]) == 2
    assert "holds the input" in _one_line_error(capsys)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
