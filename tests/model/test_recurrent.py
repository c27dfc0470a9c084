"""RecurrentMemoryModel: equivalence with the base, causal loss across segments, BPTT, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.model.recurrent import truncate_gradient
from tests.tiny_models import VOCAB, tiny_causal_lm


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)


def test_one_segment_without_memory_equals_base(arch):
    base = tiny_causal_lm(arch)
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=0, segment_size=32))
    ids = random_ids(2, 20)
    out = model(ids, labels=ids, return_logits=True)
    reference = base(ids, labels=ids)
    torch.testing.assert_close(out.logits, reference.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, reference.loss, rtol=1e-5, atol=1e-6)


def test_no_logits_unless_asked(tiny_llama):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=2, segment_size=8))
    ids = random_ids(1, 40)
    assert model(ids, labels=ids).logits is None


@pytest.mark.parametrize("length", [24, 29])  # a multiple of segment_size and a shorter last one
def test_loss_is_causal_lm_loss_across_segment_boundaries(tiny_llama, length):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=3, segment_size=8))
    ids = random_ids(2, length)
    labels = ids.clone()
    labels[0, 5:9] = -100  # ignored tokens, including the first token of segment 2
    out = model(ids, labels=labels, return_logits=True)
    assert len(out.segment_tokens) == -(-length // 8)
    # The reference: a plain causal-LM loss over the concatenated logits, shifted by one.
    expected = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    assert int(out.segment_tokens.sum()) == int((labels[:, 1:] != -100).sum())
    # Predictions: the argmax where the next token is labelled, -100 elsewhere.
    scored = torch.cat([labels[:, 1:] != -100, torch.zeros(2, 1, dtype=torch.bool)], dim=1)
    assert torch.equal(out.predictions[scored], out.logits.argmax(-1)[scored])
    assert (out.predictions[~scored] == -100).all()


def test_first_token_of_a_segment_is_predicted_by_the_previous_segment(tiny_llama):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=2, segment_size=8))
    ids = random_ids(1, 16)
    labels = torch.full_like(ids, -100)
    labels[0, 8] = ids[0, 8]  # only the first token of the second segment is labelled
    out = model(ids, labels=labels, return_logits=True)
    expected = F.cross_entropy(out.logits[0, 7:8], ids[0, 8:9])
    torch.testing.assert_close(out.loss, expected)
    assert out.segment_tokens.tolist() == [1, 0]  # scored in the segment that predicts it


def test_memory_initialised_at_embedding_scale(tiny_llama):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=64, segment_size=8))
    assert model.memory.shape == (64, tiny_llama.config.hidden_size)
    assert model.memory.requires_grad
    embed_std = tiny_llama.get_input_embeddings().weight.std().item()
    assert abs(model.memory.std().item() - embed_std) < 0.25 * embed_std


def test_truncate_gradient_cuts_the_graph():
    memory = torch.ones(1, 2, 3, requires_grad=True) * 2
    assert truncate_gradient(memory, 1, 3, bptt_depth=1).requires_grad is False
    assert truncate_gradient(memory, 2, 3, bptt_depth=1) is memory
    assert truncate_gradient(memory, 1, 3, bptt_depth=None) is memory
    assert truncate_gradient(memory, 0, 3, bptt_depth=0) is memory  # the parameter itself


def last_segment_memory_grad(base, bptt_depth, num_segments=3):
    model = RecurrentMemoryModel.wrap(
        base, RMTConfig(num_mem_tokens=2, segment_size=6, bptt_depth=bptt_depth, segment_checkpointing=False)
    )
    ids = random_ids(2, 6 * num_segments)
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]  # only the last segment's loss
    model(ids, labels=labels).loss.backward()
    return model.memory.grad


@pytest.mark.parametrize("num_segments", [3, 5])
def test_bptt_depth_one_stops_gradient_to_initial_memory(tiny_llama, num_segments):
    grad = last_segment_memory_grad(tiny_llama, bptt_depth=1, num_segments=num_segments)
    assert grad is None or torch.count_nonzero(grad) == 0


def test_full_bptt_reaches_initial_memory(tiny_llama):
    grad = last_segment_memory_grad(tiny_llama, bptt_depth=None)
    assert grad is not None and grad.abs().sum() > 0
    grad = last_segment_memory_grad(tiny_llama, bptt_depth=2)  # 2 transitions reach segment 0
    assert grad is not None and grad.abs().sum() > 0


def test_segment_checkpointing_gives_same_loss_and_gradients(arch):
    results = []
    for checkpointing in (False, True):
        base = tiny_causal_lm(arch)
        model = RecurrentMemoryModel.wrap(
            base, RMTConfig(num_mem_tokens=3, segment_size=8, segment_checkpointing=checkpointing)
        ).train()
        ids = random_ids(2, 30)
        out = model(ids, labels=ids)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and "cell.memory" in grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6, msg=name)


def padded_batch(lengths, seed=0):
    """Left-padded batch of the given lengths, and the unpadded samples."""
    total = max(lengths)
    ids = random_ids(len(lengths), total, seed)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, total - n :] = 1
    ids = ids.masked_fill(mask == 0, 0)
    samples = [ids[i, total - n :].unsqueeze(0) for i, n in enumerate(lengths)]
    return ids, mask, samples


@pytest.mark.parametrize("num_mem_tokens", [0, 3])
def test_padded_batch_matches_each_sample_alone(arch, num_mem_tokens):
    base = tiny_causal_lm(arch)
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=num_mem_tokens, segment_size=8))
    lengths = [29, 13, 6, 24]  # 4, 2, 1 and 3 segments, last segments of different lengths
    ids, mask, samples = padded_batch(lengths)
    labels = ids.masked_fill(mask == 0, -100)
    out = model(ids, attention_mask=mask, labels=labels, return_logits=True)
    new_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=5)
    assert new_tokens.shape == (len(lengths), 5)
    for i, sample in enumerate(samples):
        alone = model(sample, labels=sample, return_logits=True)
        torch.testing.assert_close(out.sample_loss[i], alone.loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.logits[i, -lengths[i] :], alone.logits[0], rtol=1e-4, atol=1e-5)
        assert torch.equal(out.predictions[i, -lengths[i] :], alone.predictions[0])
        alone_tokens = model.generate(sample, max_new_tokens=5)[0]  # stops early at eos
        assert torch.equal(new_tokens[i, : len(alone_tokens)], alone_tokens)
        assert (new_tokens[i, len(alone_tokens) :] == base.generation_config.pad_token_id).all()
    expected = sum(out.sample_loss[i] * (lengths[i] - 1) for i in range(len(lengths))) / (sum(lengths) - len(lengths))
    torch.testing.assert_close(out.loss, expected)


def test_right_padding_gives_the_same_results(tiny_llama):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=2, segment_size=8))
    ids, mask, _ = padded_batch([21, 10])
    left = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    right_ids = torch.stack([torch.cat([r[m.bool()], r[~m.bool()]]) for r, m in zip(ids, mask)])
    right_mask = mask.flip(-1)
    right = model(right_ids, attention_mask=right_mask, labels=right_ids.masked_fill(right_mask == 0, -100))
    torch.testing.assert_close(left.sample_loss, right.sample_loss)


def test_generate_returns_only_new_tokens_and_uses_memory(tiny_llama):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=4, segment_size=8))
    ids = random_ids(1, 30)
    new_tokens = model.generate(ids, max_new_tokens=6)
    assert new_tokens.shape == (1, 6)
    # Generation depends on the memory carried from the earlier segments: scaling it changes the
    # final memory and the logits of the last segment.
    with torch.no_grad():
        before = model(ids, return_logits=True).logits[0, -1]
        model.memory.mul_(5.0)
        after = model(ids, return_logits=True).logits[0, -1]
    assert not torch.allclose(before, after)


def test_forward_can_start_from_a_given_memory(tiny_llama):
    """Running in two halves with the memory handed over equals one run."""
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=2, segment_size=8))
    ids = random_ids(1, 32)
    whole = model(ids, labels=ids)
    first = model(ids[:, :16])
    second = model(ids[:, 16:], memory=first.memory)
    torch.testing.assert_close(second.memory, whole.memory)


def test_generate_reports_progress_for_every_token(tiny_llama):
    model = RecurrentMemoryModel.wrap(tiny_llama, RMTConfig(num_mem_tokens=2, segment_size=8))
    ids, mask, _ = padded_batch([21, 10])
    seen = []
    model.generate(ids, attention_mask=mask, max_new_tokens=2, progress=seen.append)
    assert len(seen) == 3 and sum(seen) == 31  # 3 segments, every real token counted once
