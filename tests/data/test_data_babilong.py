"""BABILong-style sample building: lengths, determinism, fact order, labels."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from rmt_scale.data import (
    BabiSample,
    FillerNoise,
    TokenCounter,
    build_babilong_sample,
    every_person_questions,
    format_prompt,
    format_target,
    generate_babi,
    load_noise,
    parse_babi_file,
    parse_length,
    task_labels,
)
from rmt_scale.errors import DataError


@pytest.fixture(scope="module")
def qa2_sample() -> BabiSample:
    return generate_babi("qa2", 10, seed=1)[-1]


def build(sample, length, tokenizer, seed=0, noise=None, counter=None):
    return build_babilong_sample(sample, length, noise or FillerNoise(),
                                 counter or TokenCounter(tokenizer), random.Random(seed))


def facts_in_order(context: str, facts) -> bool:
    position = 0
    for fact in facts:
        found = context.find(fact, position)
        if found < 0:
            return False
        position = found + len(fact)
    return True


def test_parse_length() -> None:
    assert parse_length("0k") == 0
    assert parse_length("1k") == 1024
    assert parse_length("128k") == 131072
    assert parse_length("1M") == 1 << 20
    assert parse_length("1500") == parse_length(1500) == 1500
    for bad in ("1g", "k", "-1k", "1.5k", ""):
        with pytest.raises(DataError, match="bad length"):
            parse_length(bad)


def test_prompt_format() -> None:
    assert format_prompt("A. B.", "Where?") == "A. B.\nQuestion: Where?\nAnswer:"
    assert format_target("garden") == " garden"


def test_0k_is_facts_only(qa2_sample, tokenizer) -> None:
    built = build(qa2_sample, "0k", tokenizer)
    assert built.context == " ".join(qa2_sample.facts)
    assert built.num_noise_sentences == 0
    assert built.prompt.endswith(f"\nQuestion: {qa2_sample.question}\nAnswer:")
    assert built.answer == qa2_sample.answer


def test_deterministic_given_seed(qa2_sample, tokenizer) -> None:
    assert build(qa2_sample, "2k", tokenizer, seed=3) == build(qa2_sample, "2k", tokenizer, seed=3)
    assert build(qa2_sample, "2k", tokenizer, seed=3) != build(qa2_sample, "2k", tokenizer, seed=4)


@pytest.mark.parametrize("length", ["1k", "4k", "16k"])
def test_length_and_fact_order_with_filler(qa2_sample, tokenizer, length) -> None:
    built = build(qa2_sample, length, tokenizer)
    assert built.num_noise_sentences > 0
    assert facts_in_order(built.context, qa2_sample.facts)
    target = parse_length(length)
    actual = len(tokenizer(built.prompt)["input_ids"])
    assert 0.97 * target <= actual <= target + 8, actual


def test_length_and_fact_order_with_books(tokenizer, noise_books, babi_en) -> None:
    noise = load_noise(noise_books[:2])
    counter = TokenCounter(tokenizer)
    samples = parse_babi_file(next(babi_en.glob("qa5_*_train.txt")))[:5]
    for seed, sample in enumerate(samples):
        built = build(sample, "8k", tokenizer, seed=seed, noise=noise, counter=counter)
        assert facts_in_order(built.context, sample.facts)
        actual = len(tokenizer(built.prompt, verbose=False)["input_ids"])
        assert 0.95 * 8192 <= actual <= 8192 * 1.01, actual


def test_long_sample_is_fast(qa2_sample, tokenizer) -> None:
    # 256k tokens here; the same code builds 1M tokens in a few seconds (docs/data.md).
    start = time.perf_counter()
    built = build(qa2_sample, "256k", tokenizer)
    assert time.perf_counter() - start < 15
    assert abs(built.num_tokens - (256 << 10)) < 100
    assert facts_in_order(built.context, qa2_sample.facts)


def test_facts_exceeding_target_get_no_noise(tokenizer) -> None:
    sample = generate_babi("qa3", 5, seed=0)[-1]
    built = build(sample, 16, tokenizer)
    assert built.num_noise_sentences == 0 and built.context == " ".join(sample.facts)


def test_task_labels(qa2_sample) -> None:
    samples = generate_babi("qa1", 200, seed=0)
    labels = task_labels(samples)
    assert labels == sorted({s.answer for s in samples})
    assert set(labels) <= {"bathroom", "hallway", "garden", "office", "bedroom", "kitchen"}
    assert task_labels([{"answer": "no"}, {"answer": "yes"}, {"answer": "no"}]) == ["no", "yes"]


def test_any_babi_task_builds(tokenizer, babi_en: Path) -> None:
    counter = TokenCounter(tokenizer)
    for path in sorted(babi_en.glob("qa*_*_train.txt")):
        sample = parse_babi_file(path)[0]
        built = build(sample, "1k", tokenizer, counter=counter)
        assert facts_in_order(built.context, sample.facts)


def tokens_after_last_fact(built, facts, tokenizer) -> int:
    """Prompt tokens that follow the end of the last fact."""
    end = built.prompt.rfind(facts[-1]) + len(facts[-1])
    return len(tokenizer(built.prompt[end:], add_special_tokens=False)["input_ids"])


def test_min_fact_gap_keeps_facts_away_from_the_question(tokenizer) -> None:
    counter = TokenCounter(tokenizer)
    samples = generate_babi("qa1", 40, seed=2)
    gaps_without, gaps_with = [], []
    for seed, sample in enumerate(samples):
        plain = build(sample, 400, tokenizer, seed=seed, counter=counter)
        gapped = build_babilong_sample(sample, 400, FillerNoise(), counter, random.Random(seed),
                                       min_fact_gap=128)
        assert facts_in_order(gapped.context, sample.facts)
        assert gapped.num_noise_sentences == plain.num_noise_sentences
        gaps_without.append(tokens_after_last_fact(plain, sample.facts, tokenizer))
        gaps_with.append(tokens_after_last_fact(gapped, sample.facts, tokenizer))
    # Token counts are estimated per sentence, so the measured gap may miss by a token or two.
    assert min(gaps_with) >= 126, gaps_with
    assert min(gaps_without) < 126  # without the option some facts sit right before the question


def test_min_fact_gap_zero_is_the_default_sample(qa2_sample, tokenizer) -> None:
    counter = TokenCounter(tokenizer)
    built = build_babilong_sample(qa2_sample, "2k", FillerNoise(), counter, random.Random(5),
                                  min_fact_gap=0)
    assert built == build(qa2_sample, "2k", tokenizer, seed=5, counter=counter)


def test_min_fact_gap_longer_than_the_noise_puts_the_facts_first(qa2_sample, tokenizer) -> None:
    built = build_babilong_sample(qa2_sample, "2k", FillerNoise(), TokenCounter(tokenizer),
                                  random.Random(0), min_fact_gap=10_000)
    assert built.num_noise_sentences > 0
    assert built.context.startswith(" ".join(qa2_sample.facts))


def test_every_person_questions_ask_each_other_person_where_they_moved_last() -> None:
    sample = BabiSample("qa1", 0, ("Mary went to the kitchen.", "John moved to the garden.",
                                   "Mary went back to the office.", "Sandra journeyed to the hallway."),
                        "Where is John?", "garden", (2,), (1,))
    pairs = every_person_questions(sample, random.Random(0))
    assert sorted(pairs) == [("Where is Mary?", "office"), ("Where is Sandra?", "hallway")]


def test_every_person_questions_are_only_for_qa1_moves(qa2_sample) -> None:
    with pytest.raises(DataError, match="for qa1, not qa2"):
        every_person_questions(qa2_sample, random.Random(0))
    odd = BabiSample("qa1", 0, ("Mary picked up the apple.",), "Where is Mary?", "x", (1,), (0,))
    with pytest.raises(DataError, match="not a qa1 move"):
        every_person_questions(odd, random.Random(0))


def test_extra_questions_count_in_the_length_and_the_fact_gap(tokenizer) -> None:
    counter = TokenCounter(tokenizer)
    for seed, sample in enumerate(generate_babi("qa1", 20, seed=4)):
        extra = every_person_questions(sample, random.Random(seed))
        built = build_babilong_sample(sample, 300, FillerNoise(), counter, random.Random(seed),
                                      min_fact_gap=96, extra_qa=extra)
        assert built.extra_qa == tuple(extra)
        tail = "".join(format_prompt("", q) + format_target(a) for q, a in extra)
        text = built.prompt + format_target(built.answer) + tail
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 300 + 8
        end = text.rfind(sample.facts[-1]) + len(sample.facts[-1])
        assert len(tokenizer(text[end:], add_special_tokens=False)["input_ids"]) >= 94
