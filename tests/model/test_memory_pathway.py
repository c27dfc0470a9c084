"""benchmarks/memory_pathway.py: its samples need the memory, and its key sensitivity measures the
written memory's dependence on the key."""

from __future__ import annotations

import pytest
import torch

from benchmarks.memory_pathway import KEY_WORDS, SEGMENT, WordKeyRecall, key_sensitivity, validate
from rmt_scale import RecurrentMemoryModel, RMTConfig
from tests.bpe import byte_level_bpe
from tests.tiny_models import tiny_causal_lm

VOCAB = 512


@pytest.fixture(scope="module")
def tokenizer():
    line = "Key:" + "".join(KEY_WORDS) + " the Answer"
    return byte_level_bpe([line] * 50, vocab_size=300, pad_token="<pad>")


def words(tokenizer, *texts):
    return [tokenizer.encode(text, add_special_tokens=False)[0] for text in texts]


def test_only_the_first_segment_holds_the_key(tokenizer):
    data = WordKeyRecall(tokenizer, VOCAB, constant_filler=False, seed=1)
    ids, labels = data.batch(0, 16)
    key_ids = set(words(tokenizer, *KEY_WORDS))
    key_at, answer = words(tokenizer, "Key:", " Answer")
    assert (ids[:, 0] == key_at).all() and (ids[:, -3] == answer).all()
    torch.testing.assert_close(ids[:, -2:], ids[:, 1:3])
    scored = labels != -100
    assert scored[:, -2:].all() and scored.sum() == 2 * len(ids)
    assert set(labels[scored].tolist()) <= key_ids
    between = ids[:, 3:-3]  # the filler: no key word, no marker, so only the memory can carry the key
    assert not torch.isin(between, torch.tensor(sorted(key_ids | {key_at, answer}))).any()
    assert (between[:, SEGMENT - 3:] != ids[:, 1:2]).any()  # segment 2 is not empty filler


def test_another_key_changes_the_key_and_nothing_else(tokenizer):
    data = WordKeyRecall(tokenizer, VOCAB, constant_filler=False, seed=1)
    ids, labels = data.batch(0, 16)
    other, other_labels = data.batch(0, 16, shift_key=3)
    changed = ids != other
    assert changed[:, [1, 2, -2, -1]].all() and changed.sum() == 4 * len(ids)
    assert ((labels != other_labels) == (labels != -100)).all()


def test_constant_filler_leaves_only_the_key_varying(tokenizer):
    data = WordKeyRecall(tokenizer, VOCAB, constant_filler=True, seed=1)
    ids, _ = data.batch(0, 16)
    (the,) = words(tokenizer, " the")
    assert (ids[:, 3:-3] == the).all()
    assert len({tuple(row[1:3].tolist()) for row in ids}) > 1


def test_key_sensitivity_of_a_fresh_memory_model(tokenizer):
    torch.manual_seed(0)
    model = RecurrentMemoryModel.wrap(tiny_causal_lm("llama", vocab_size=VOCAB),
                                      RMTConfig(num_mem_tokens=4, segment_size=SEGMENT, sink_token=0)).eval()
    data = WordKeyRecall(tokenizer, VOCAB, constant_filler=False, seed=1)
    assert key_sensitivity(model, data) > 0.01  # a random model's memory depends on what it read
    loss, accuracy = validate(model, data)
    assert loss > 0 and 0 <= accuracy <= 1


def test_place_segments_differ_only_in_the_place(tokenizer):
    from benchmarks.memory_pathway import QA1_PLACES, place_segments, place_sensitivity

    segments = place_segments(tokenizer, SEGMENT)
    assert len(segments) == len(QA1_PLACES) and all(s.shape == (8, SEGMENT) for s in segments)
    for other in segments[1:]:
        columns = (segments[0] != other).any(dim=0).nonzero().flatten()
        assert 0 < len(columns)  # the place words (and what the shift moves past them)
        assert (segments[0][:, : columns[0]] == other[:, : columns[0]]).all()
        prefix = tokenizer.decode(segments[0][0, : columns[0]])
        assert "Mary went to the" in prefix
    torch.manual_seed(0)
    model = RecurrentMemoryModel.wrap(tiny_causal_lm("llama", vocab_size=VOCAB),
                                      RMTConfig(num_mem_tokens=4, segment_size=SEGMENT, sink_token=0)).eval()
    assert place_sensitivity(model, tokenizer) > 0.01


def test_the_linear_probe_reads_a_key_that_is_there_and_not_one_that_is_not():
    from benchmarks.memory_pathway import linear_probe

    generator = torch.Generator().manual_seed(0)
    keys = torch.randint(10, 18, (640,), generator=generator)
    noise = torch.randn(640, 64, generator=generator)
    encoded = noise.clone()
    encoded[:, :8] += 3 * torch.nn.functional.one_hot(keys - 10, 8)
    # Reading the 8 key columns alone gets 0.91 on these samples; chance is 1/8.
    assert linear_probe(encoded, keys, train=512) > 0.7
    assert linear_probe(noise, keys, train=512) < 0.3


def test_readouts_of_a_tiny_model(tokenizer):
    from benchmarks.memory_pathway import readout_accuracy

    torch.manual_seed(0)
    model = RecurrentMemoryModel.wrap(tiny_causal_lm("llama", vocab_size=VOCAB),
                                      RMTConfig(num_mem_tokens=4, segment_size=SEGMENT, sink_token=0)).eval()
    data = WordKeyRecall(tokenizer, VOCAB, constant_filler=False, seed=1)
    results = {memory: readout_accuracy(model, data, memory, count=32)
               for memory in ("initial", "written", "embeddings")}
    assert all(0 <= value <= 1 for value in results.values())
    assert len(set(results.values())) > 1  # the three memories are different inputs


def test_the_runs_file_of_a_long_benchmark(tmp_path):
    """benchmarks/report.py: a run replaces one of the same identity, others stay; a file that is
    not a results file stops the benchmark with one line and is left as it was."""
    from benchmarks.report import load_runs, save_run

    path = tmp_path / "runs.json"
    assert load_runs(path) == []
    identity = lambda run: (run["name"], run["steps"])  # noqa: E731
    save_run(path, {"name": "a", "steps": 100, "score": 1}, identity)
    save_run(path, {"name": "a", "steps": 600, "score": 2}, identity)
    save_run(path, {"name": "a", "steps": 100, "score": 3}, identity)
    assert sorted((r["steps"], r["score"]) for r in load_runs(path)) == [(100, 3), (600, 2)]
    for text in ("{not json", '{"a": 1}'):
        path.write_text(text)
        with pytest.raises(SystemExit, match=r"^error: .*runs.json is not a results file of this benchmark"):
            load_runs(path)
        assert path.read_text() == text
