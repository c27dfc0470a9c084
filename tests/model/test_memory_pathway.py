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
