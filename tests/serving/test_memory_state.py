"""Memory states in the model API: reading in pieces equals reading whole, and generating from a
state equals generating over the whole input (RecurrentMemoryModel.read / generate_from_states)."""

from __future__ import annotations

import pytest
import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.errors import MemoryStateError
from rmt_scale.model.memory_state import MemoryState
from tests.tiny_models import VOCAB, tiny_causal_lm

SEGMENT = 8


def random_ids(length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model():
    return RecurrentMemoryModel.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=3, segment_size=SEGMENT)).eval()


def test_state_keeps_full_segments_in_memory_and_the_rest_as_tail(model):
    document = random_ids(43, seed=0)
    state = model.read([document])[0]
    assert state.tokens_read == 43
    assert torch.equal(state.tail_ids, document[40:])  # 5 full segments read, 3 tokens wait
    expected, last = model.read_context(document[:40].unsqueeze(0), read_last=True)
    assert last is None
    assert torch.equal(state.memory, expected[0])
    assert not torch.equal(state.memory, model.memory)


@pytest.mark.parametrize("cuts", [[13, 30], [8, 16, 24], [0, 1, 2, 3, 41], [43]])
def test_reading_in_pieces_equals_reading_whole(model, cuts):
    document = random_ids(43, seed=1)
    whole = model.read([document])[0]
    state = model.initial_state()
    for start, end in zip([0, *cuts], [*cuts, 43]):
        state = model.read([document[start:end]], [state])[0]
    assert torch.equal(state.memory, whole.memory)  # exact, not close
    assert torch.equal(state.tail_ids, whole.tail_ids)
    assert state.tokens_read == whole.tokens_read == 43


def test_generating_from_a_state_equals_generating_over_the_whole_input(model):
    document, question = random_ids(45, seed=2), random_ids(6, seed=3)
    state = model.read([document])[0]
    from_state = model.generate_from_states([state], [question], max_new_tokens=6)
    whole = model.generate(torch.cat([document, question]).unsqueeze(0), max_new_tokens=6)
    assert torch.equal(from_state, whole)
    # A prompt that completes the tail's segment and starts more: still the same tokens.
    long_question = random_ids(19, seed=4)
    from_state = model.generate_from_states([state], [long_question], max_new_tokens=6)
    whole = model.generate(torch.cat([document, long_question]).unsqueeze(0), max_new_tokens=6)
    assert torch.equal(from_state, whole)


def test_many_states_and_many_questions_in_one_batch(model):
    documents = [random_ids(45, seed=5), random_ids(20, seed=6), random_ids(3, seed=7), random_ids(16, seed=8)]
    states = model.read(documents)  # one batch, documents of 5, 2, 0 and 2 full segments
    for document, state in zip(documents, states):
        alone = model.read([document])[0]
        torch.testing.assert_close(state.memory, alone.memory, rtol=1e-5, atol=1e-5)
        assert torch.equal(state.tail_ids, alone.tail_ids)
    questions = [random_ids(5, seed=9), random_ids(2, seed=10)]
    rows = [(s, q) for s in states for q in questions]  # every question to every document
    answers = model.generate_from_states([s for s, _ in rows], [q for _, q in rows], max_new_tokens=5)
    assert answers.shape == (len(rows), 5)
    for answer, (document, question) in zip(answers, [(d, q) for d in documents for q in questions]):
        alone = model.generate(torch.cat([document, question]).unsqueeze(0), max_new_tokens=5)[0]
        assert answer[: alone.numel()].tolist() == alone.tolist()


def test_states_of_another_model_are_refused(model):
    state = model.read([random_ids(20, seed=11)])[0]
    wider = RecurrentMemoryModel.wrap(tiny_causal_lm("llama", hidden=64), RMTConfig(num_mem_tokens=3, segment_size=SEGMENT))
    with pytest.raises(MemoryStateError, match="read by another model"):
        wider.generate_from_states([state], [random_ids(3, seed=12)])
    shorter = RecurrentMemoryModel.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=3, segment_size=2))
    with pytest.raises(MemoryStateError, match="another segment_size"):
        shorter.read([random_ids(3, seed=13)], [state])
    half = MemoryState(state.memory.to(torch.bfloat16), state.tail_ids, state.tokens_read)
    with pytest.raises(MemoryStateError, match="bfloat16"):
        model.generate_from_states([half], [random_ids(3, seed=14)])


def test_bad_arguments_are_clear_errors(model):
    state = model.initial_state()
    with pytest.raises(ValueError, match="neither unread tokens nor a prompt"):
        model.generate_from_states([state], [torch.zeros(0, dtype=torch.long)])
    with pytest.raises(ValueError, match="give one per state"):
        model.generate_from_states([state, state], [random_ids(3, seed=15)])
    with pytest.raises(ValueError, match="1-D token ids"):
        model.read([random_ids(4, seed=16).view(2, 2)])
    with pytest.raises(MemoryStateError, match="unread tokens after reading only"):
        MemoryState(state.memory, random_ids(4, seed=17), tokens_read=2)
