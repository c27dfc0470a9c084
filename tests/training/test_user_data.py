"""The user's own data in training (data.kind text and qa), in-process: config keys, what the plan
says each stage has, windows and answer-only labels through the training data path."""

from __future__ import annotations

import datasets
import pytest
import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import ConfigError, DataError
from rmt_scale.model.segments import IGNORE_INDEX
from rmt_scale.training.config import load_train_config
from rmt_scale.training.data import RunData
from rmt_scale.training.plan import build_plan
from tests.tiny_models import tiny_causal_lm
from tests.training.user_data_files import (
    SEGMENT,
    document_rows,
    overrides,
    qa_rows,
    save_tokenizer,
    write_rows,
)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Tokenised data goes to this test's directory, not the user's HF datasets cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer") / "bpe")


def config(tmp_path, kind, tokenizer_dir, sources, *extra):
    return load_train_config("tiny", overrides(kind, tokenizer_dir, sources, tmp_path / "run", *extra))


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["data.kind=text"], "data.kind=text needs data.text.sources"),
    (["data.kind=qa", "data.qa.sources=[a.jsonl]", "data.qa.fields={contxt: doc}"],
     "data.qa.fields: unknown QA field(s) ['contxt']"),
    (["data.kind=qa", "data.qa.sources=[a.jsonl]", "data.qa.template='{context} Answer:'"],
     "data.qa.template: template '{context} Answer:' does not contain {question}"),
    (["data.kind=qa", "data.qa.sources=[a.jsonl]", "data.qa.long_samples=drop"],
     "data.qa.long_samples must be one of ['skip', 'truncate', 'error']"),
    (["data.kind=text", "data.text.sources=[a]", "data.text.short_documents=merge"],
     "data.text.short_documents must be one of ['skip', 'pack']"),
    (["data.kind=qa", "data.qa.sources=[d]", "data.qa.preset=babilong"], "needs data.qa.task"),
    (["data.kind=qa", "data.qa.sources=[d]", "data.qa.preset=babilong", "data.qa.task=qa1",
      "data.qa.lengths=[4x]"], "data.qa.lengths: bad length '4x'"),
    (["data.kind=qa", "data.qa.sources=[d]", "data.qa.task=qa42"], "data.qa.task: unknown bAbI task"),
    (["data.kind=text", "data.text.sources=[a]", "data.valid_sources=[b]", "data.valid_fraction=0.1"],
     "not both"),
    (["data.valid_fraction=0.1"], "are for kind text or qa"),
    (["data.kind=text", "data.text.sources=[a]", "data.text.feild=body"],
     "unknown config key(s) ['data.text.feild'] in data.text; valid keys are ['sources', 'field', "
     "'short_documents', 'strip_license']"),
    (["data.kind=text", "data.text.sources=[a]", "curriculum.stages.1.advance={metric: loss}"],
     "there is no validation data (set data.valid_sources or data.valid_fraction)"),
])
def test_bad_data_keys_are_one_line_config_errors(extra, message):
    with pytest.raises(ConfigError) as caught:
        load_train_config("tiny", ["curriculum.stages.1.advance=null", *extra])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_keys_read_back(tmp_path):
    loaded = load_train_config("tiny", [
        "data.kind=qa", "data.qa.sources=[a.jsonl, 'b/*.parquet']", "data.qa.fields={context: doc}",
        "data.qa.template=chat", "data.qa.long_samples=truncate", "data.valid_sources=[v.jsonl]",
        "data.tokenizer=org/tok"])
    qa = loaded.data.qa
    assert (qa.sources, qa.fields, qa.template_name(), qa.long_samples) == (
        ["a.jsonl", "b/*.parquet"], {"context": "doc"}, "chat", "truncate")
    assert loaded.data.valid_sources == ["v.jsonl"] and loaded.data.has_validation()
    preset = load_train_config("tiny", ["data.kind=qa", "data.qa.sources=[RMT-team/babilong]",
                                        "data.qa.preset=babilong", "data.qa.task=qa2",
                                        "data.qa.lengths=[0k, 1k]", "curriculum.stages.1.advance=null"])
    assert preset.data.qa.template_name() == "babilong"


# --- text ----------------------------------------------------------------------------------------


def test_text_plan_counts_windows_per_stage_and_holds_out_whole_documents(tmp_path, tokenizer_dir):
    source = write_rows(document_rows(), tmp_path / "books.jsonl")
    plan = build_plan(config(tmp_path, "text", tokenizer_dir, [source]), world_size=2)
    data = plan.data
    assert len(data.documents) + len(data.valid_documents) == len(document_rows())
    assert len(data.valid_documents) == 1  # 20% of 4 documents, at least one
    lengths = data.documents["num_tokens"]
    for n in (1, 2):  # stage 2 varies between 1 and 2 segments: both lengths are planned
        assert len(data.windows[n].windows) == sum(length // (n * SEGMENT) for length in lengths)
    text = plan.describe()
    assert "data:        text, 4 documents" in text
    assert "validation: 1 document held out (data.valid_fraction=0.2, fixed seed 0); at most 8 per stage" in text
    two = data.windows[2]
    assert (f"  stage 2, 2 segments: {len(two.windows)} windows of 64 tokens; documents: 3 long enough, "
            f"0 shorter skipped; tokens left out: {two.dropped_tokens}; validation: 8 windows") in text
    # The held-out document depends on the data only: another run seed validates on the same text.
    again = build_plan(config(tmp_path, "text", tokenizer_dir, [source], "seed=7"), world_size=2)
    assert again.data.valid_documents["source"] == data.valid_documents["source"]

    run = RunData(plan.config, 512, user_data=data)
    sample = run.train(2, stage=1)[0]
    assert len(sample["input_ids"]) == 2 * SEGMENT and sample["labels"] == sample["input_ids"]
    assert len(run.valid(2, stage=1)) == 8 and len(run.train(1, stage=1)) == len(data.windows[1].windows)


def test_a_stage_no_document_reaches_stops_the_plan(tmp_path, tokenizer_dir):
    source = write_rows([{"body": "A short note."}, {"body": "Another one."}], tmp_path / "notes.parquet")
    with pytest.raises(DataError, match="no window of 1 segments x 32 tokens: the longest of 2 documents"):
        build_plan(config(tmp_path, "text", tokenizer_dir, [source], "data.valid_fraction=0"), world_size=1)


# --- qa ------------------------------------------------------------------------------------------


def test_qa_plan_buckets_samples_by_stage(tmp_path, tokenizer_dir):
    source = write_rows(qa_rows(), tmp_path / "qa.parquet")
    plan = build_plan(config(tmp_path, "qa", tokenizer_dir, [source]), world_size=1)
    data = plan.data
    segments = data.segments
    assert sorted(data.pools[0]) == [i for i, k in enumerate(segments) if k <= 2]
    assert sorted(data.pools[1]) == list(range(len(segments)))  # stage 2 mixes shorter ones
    text = plan.describe()
    assert f"training samples longer than the last stage: {data.fit}" in text
    assert f"  stage 1, 2 segments: {len(data.pools[0])} samples of" in text
    assert "samples by segments filled: " + ", ".join(
        f"{n}: {segments.count(n)}" for n in sorted(set(segments))) in text
    # QA samples fill their last segment in part: the stage's token count is an estimate.
    assert not any(stage.exact for stage in plan.stages)


def test_answer_only_labels_through_the_training_data_path(tmp_path, tokenizer_dir):
    """Only answer tokens (and EOS) are scored, also when the answer opens a new segment."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rows = qa_rows(8)
    # Grow one context until its prompt fills whole segments: its answer starts a new segment.
    boundary = dict(rows[0])
    for words in range(200):
        boundary["context"] = rows[0]["context"] + " now" * words
        prompt = f"{boundary['context']}\nQuestion: {boundary['question']}\nAnswer:"
        if len(tokenizer(prompt)["input_ids"]) % SEGMENT == 0:
            break
    source = write_rows([boundary, *rows[1:]], tmp_path / "qa.jsonl")
    cfg = config(tmp_path, "qa", tokenizer_dir, [source], "data.valid_fraction=0",
                 "data.qa.long_samples=truncate", "rmt.num_mem_tokens=2")
    run = RunData(cfg, 512)
    samples = run.train(4, stage=1)
    batch = run.collate([samples[i] for i in range(len(samples))])
    for row in range(len(samples)):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        assert tokenizer.decode(labelled) == f" {run.user_data.samples[row]['answer']}<eos>"
    first = [i for i, s in enumerate(run.user_data.samples) if s["source"].endswith(":1")][0]
    prompt_length = run.user_data.samples[first]["prompt_length"]
    assert prompt_length % SEGMENT == 0
    answer_tokens = len(run.user_data.samples[first]["input_ids"]) - prompt_length
    model = RecurrentMemoryModel.wrap(tiny_causal_lm("llama", vocab_size=512),
                                      RMTConfig(num_mem_tokens=2, segment_size=SEGMENT))
    alone = run.collate([run.user_data.samples.select_columns(["input_ids", "labels"])[first]])
    out = model(**alone)
    # The last prompt segment's final token predicts the first answer token across the boundary;
    # the answer's own segment scores the rest; no other step scores anything.
    steps = prompt_length // SEGMENT
    expected = [0] * (steps - 1) + [1, answer_tokens - 1]
    assert out.segment_tokens.tolist() == expected
    assert torch.isfinite(out.loss)


def test_the_babilong_preset_reads_the_official_layout(tmp_path, tokenizer_dir):
    """Official rows (input, question, target), one file per task and length, official prompt."""
    from rmt_scale.data import BABILONG_PROMPTS

    rows = [{"input": row["context"], "question": row["question"], "target": row["answer"]}
            for row in qa_rows(12)]
    for length, part in (("0k", rows[:6]), ("1k", rows[6:])):
        write_rows(part, tmp_path / "babilong" / length / "qa1-00000-of-00001.parquet")
    write_rows(rows, tmp_path / "babilong" / "1k" / "qa2-00000-of-00001.parquet")
    cfg = config(tmp_path, "qa", tokenizer_dir, [tmp_path / "babilong"], "data.qa.preset=babilong",
                 "data.qa.task=qa1", "data.qa.lengths=[0k, 1k]", "rmt.segment_size=256",
                 "model.random.max_positions=512", "data.valid_fraction=0",
                 "curriculum.stages.0.vary_n_segments=true")
    plan = build_plan(cfg, world_size=1)
    assert (f"data:        qa, 12 rows from {tmp_path / 'babilong'}, preset babilong (qa1 at 0k, 1k); "
            "template babilong") in plan.describe().splitlines()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    first = plan.data.samples[0]
    prompt = tokenizer.decode(first["input_ids"][: first["prompt_length"]])
    assert prompt.startswith(BABILONG_PROMPTS["qa1"]["instruction"])
    assert prompt.endswith(f"</context>\n\nQuestion: {first['question']}")
