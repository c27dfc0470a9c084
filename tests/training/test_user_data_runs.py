"""Training a tiny model on the user's own data, whole runs: 2 DeepSpeed ranks on CPU for each kind
(text from jsonl, qa from parquet), and one-process runs of the train worker for the other source
formats (parquet and saved `datasets` directories, jsonl) and a base named by its Hugging Face id in
a local cache. Each run is 20 steps; its training loss must fall."""

from __future__ import annotations

import json
import sys

import pytest

from tests.model.test_model_ids import MODEL_ID, fake_hub_cache
from tests.training.helpers import metrics, run_ok, train_cmd
from tests.training.user_data_files import (
    SEGMENT,
    document_rows,
    overrides,
    qa_rows,
    save_tokenizer,
    write_rows,
)

pytestmark = pytest.mark.slow


def worker_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rmt_scale.cli.train_worker", "--config", "tiny", *args]


def assert_loss_falls(run_dir, margin: float) -> None:
    losses = [r["loss"] for r in metrics(run_dir)]
    assert len(losses) == 20
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - margin, losses


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer") / "bpe")


@pytest.mark.distributed
def test_text_from_jsonl_on_two_ranks(tmp_path, tokenizer_dir):
    source = write_rows(document_rows(), tmp_path / "books.jsonl")
    out = tmp_path / "run"
    output = run_ok(train_cmd(2, "tiny", overrides("text", tokenizer_dir, [source], out)), tmp_path,
                    HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"))
    assert output.count("data:        text, 4 documents") == 1  # the plan, printed by rank 0
    assert_loss_falls(out, 0.5)
    # Validation logs the loss of each segment position, also into TensorBoard.
    evals = metrics(out, "eval")
    assert [r["num_segments"] for r in evals] == [1, 2]
    assert set(evals[-1]) >= {"loss_segment_1", "loss_segment_2"}
    assert abs((evals[-1]["loss_segment_1"] + evals[-1]["loss_segment_2"]) / 2 - evals[-1]["loss"]) < 0.05
    assert "eval loss per segment: " in output
    assert (out / "final" / "tokenizer.json").is_file()  # data.tokenizer goes with the adapter
    # ... unless left out, for a smaller adapter to ship: nothing of the tokenizer, and the card says so.
    from rmt_scale.export.adapter import export_checkpoint

    export_checkpoint(out, tmp_path / "small", include_tokenizer=False)
    assert not any((tmp_path / "small" / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    assert "**Tokenizer:** not included: loaded from the base" in (tmp_path / "small" / "README.md").read_text()


@pytest.mark.distributed
def test_qa_from_parquet_on_two_ranks(tmp_path, tokenizer_dir):
    source = write_rows(qa_rows(), tmp_path / "qa.parquet")
    out = tmp_path / "run"
    output = run_ok(train_cmd(2, "tiny", overrides("qa", tokenizer_dir, [source], out)), tmp_path,
                    HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"))
    assert output.count("data:        qa, 48 rows") == 1 and "  stage 2, 4 segments: " in output
    assert_loss_falls(out, 1.0)
    assert all("loss_segment_1" not in r for r in metrics(out, "eval"))


def test_text_from_parquet_and_a_saved_dataset_in_one_process(tmp_path, tokenizer_dir):
    rows = document_rows()
    sources = [write_rows(rows[:2], tmp_path / "books.parquet"), write_rows(rows[2:], tmp_path / "saved")]
    out = tmp_path / "run"
    output = run_ok(worker_cmd(overrides("text", tokenizer_dir, sources, out)), tmp_path,
                    HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"))
    assert "data:        text, 4 documents" in output and f"windows of {2 * SEGMENT} tokens" in output
    assert_loss_falls(out, 0.5)


def test_qa_from_jsonl_and_a_saved_dataset_on_a_base_named_by_its_id(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    rows = qa_rows()
    sources = [write_rows(rows[:24], tmp_path / "qa.jsonl"), write_rows(rows[24:], tmp_path / "saved")]
    hub = tmp_path / "hub"
    fake_hub_cache(hub, tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    out = tmp_path / "run"
    args = overrides("qa", tokenizer_dir, sources, out, "model.init=pretrained", f"model.path={MODEL_ID}",
                     "data.tokenizer=null")
    output = run_ok(worker_cmd(args), tmp_path, HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"),
                    HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")
    assert f"base:        {MODEL_ID} (local cache: {hub}" in output
    assert_loss_falls(out, 1.0)
    recorded = json.loads((out / "final" / "rmt_base.json").read_text())["base_model_name_or_path"]
    assert recorded == MODEL_ID  # not this machine's snapshot path
    assert "base_model: tiny-org/tiny-llama" in (out / "final" / "README.md").read_text()
