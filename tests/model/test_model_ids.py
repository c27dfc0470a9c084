"""Models named by their Hugging Face id, read offline from a local Hub cache (a fake one here:
models--org--name/snapshots/<commit>/ with refs/main), and adapters that record the id."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import constants

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import AdapterError
from rmt_scale.model.loading import (
    load_causal_lm,
    load_tokenizer,
    model_id_of,
    portable_model_name,
    resolve_model_dir,
    snapshot_model_id,
)
from rmt_scale.model.saving import BASE_FILE, recorded_base_path
from tests.bpe import byte_level_bpe
from tests.tiny_models import tiny_causal_lm

MODEL_ID = "tiny-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(root, model_id=MODEL_ID, tokenizer=None):
    """A Hub cache holding one tiny Llama with its tokenizer, laid out as huggingface_hub does."""
    repo = root / f"models--{model_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    if tokenizer is None:
        tokenizer = byte_level_bpe(["Mary went to the kitchen.", "Where is Mary? kitchen"], 300,
                                   pad_token="<pad>", eos_token="<eos>")
    tiny_causal_lm("llama", vocab_size=len(tokenizer)).save_pretrained(snapshot)
    tokenizer.save_pretrained(str(snapshot))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """HF_HUB_CACHE=tmp for this process (huggingface_hub reads the constant at call time)."""
    root = tmp_path / "hub"
    snapshot = fake_hub_cache(root)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return snapshot


def test_an_id_in_the_cache_resolves_to_its_snapshot_offline(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir(MODEL_ID) == hub_cache
    assert model_id_of(MODEL_ID) == MODEL_ID and model_id_of(str(hub_cache)) is None
    assert snapshot_model_id(hub_cache) == MODEL_ID
    lm = load_causal_lm(MODEL_ID)
    assert lm.config.vocab_size == len(load_tokenizer(MODEL_ID))


def test_another_revision_stays_a_path(hub_cache):
    other = hub_cache.parent / ("f" * 40)
    other.mkdir()
    assert snapshot_model_id(other) is None


@pytest.mark.parametrize("name, message", [
    ("tiny-org/absent", "tiny-org/absent: no such directory, and no model of that id in the local "
                        "Hugging Face cache ({cache}) or of that name in"),
    ("/nowhere/model", "/nowhere/model: no such directory"),
])
def test_a_missing_model_is_one_line(hub_cache, name, message):
    with pytest.raises(AdapterError) as caught:
        load_causal_lm(name)
    text = str(caught.value)
    assert message.format(cache=constants.HF_HUB_CACHE) in text and "\n" not in text


def test_an_adapter_on_a_cached_base_records_the_id_and_loads_by_it(hub_cache, tmp_path):
    base = load_causal_lm(MODEL_ID)
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=8))
    model.save_pretrained(tmp_path / "adapter")  # no base path given: recorded from the loaded base
    recorded = json.loads((tmp_path / "adapter" / BASE_FILE).read_text())["base_model_name_or_path"]
    assert recorded == MODEL_ID == recorded_base_path(tmp_path / "adapter")
    loaded = RecurrentMemoryModel.from_pretrained(tmp_path / "adapter")
    assert loaded.memory.shape == model.memory.shape


def test_a_base_in_the_models_home_is_recorded_by_its_name(hub_cache, tmp_path, monkeypatch):
    """What `rmt-scale fetch-default` imports (into $RMT_SCALE_HOME/models/NAME) is named by NAME in
    an adapter, so an adapter shipped in the repository loads wherever that home holds the base."""
    monkeypatch.setenv("RMT_SCALE_HOME", str(tmp_path / "home"))
    home_base = tmp_path / "home" / "models" / "Tiny-Base"
    load_causal_lm(MODEL_ID).save_pretrained(home_base)
    assert resolve_model_dir("Tiny-Base") == home_base and portable_model_name(home_base) == "Tiny-Base"
    assert portable_model_name(tmp_path / "home") is None  # not a model directory of the home
    model = RecurrentMemoryModel.wrap(load_causal_lm(str(home_base)), RMTConfig(num_mem_tokens=2, segment_size=8))
    model.save_pretrained(tmp_path / "adapter", base_model_name_or_path=str(home_base))
    assert recorded_base_path(tmp_path / "adapter") == "Tiny-Base"
    assert RecurrentMemoryModel.from_pretrained(tmp_path / "adapter").memory.shape == model.memory.shape
    monkeypatch.setenv("RMT_SCALE_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(AdapterError, match="fetch-default"):
        RecurrentMemoryModel.from_pretrained(tmp_path / "adapter")


def test_eval_takes_a_cached_id_as_model(hub_cache, tmp_path, capsys):
    from rmt_scale.cli.main import main

    rows = tmp_path / "qa.jsonl"
    rows.write_text(json.dumps({"context": "Mary went to the kitchen.", "question": "Where is Mary?",
                                "answer": "kitchen"}) + "\n")
    out = tmp_path / "eval"
    assert main(["eval", "--model", MODEL_ID, "--data", str(rows), "--out", str(out), "--no-progress",
                 "--max-new-tokens", "2", "--cache-dir", str(tmp_path / "cache")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["kind"] == "full-attention" and results["model"]["base"] == MODEL_ID
    assert main(["eval", "--model", "tiny-org/absent", "--data", str(rows), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "model tiny-org/absent: no such directory, and no model of that id in the local Hugging " \
           "Face cache" in err and not (tmp_path / "x").exists()
