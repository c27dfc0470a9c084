"""Build BABILong-style samples: bAbI facts hidden in long noise, then the question.

Following Kuratov et al. (2024), "BABILong": the facts of a bAbI sample are scattered, in their
order, at random places among noise sentences until the prompt reaches a target length in tokens of
the model's tokenizer; the question comes last and the label is the answer. One prompt format is
used for training and for evaluation (:data:`PROMPT_TEMPLATE`, :data:`TARGET_TEMPLATE`).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rmt_scale.data.babi import BabiSample
from rmt_scale.data.noise import NoiseSource
from rmt_scale.errors import DataError

PROMPT_TEMPLATE = "{context}\nQuestion: {question}\nAnswer:"
"""The prompt: context (facts + noise), question, and the cue the answer follows."""

TARGET_TEMPLATE = " {answer}"
"""The training target after the prompt (the tokenizer's EOS is appended after it)."""

LENGTHS = ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k", "1M")
"""The usual BABILong lengths; any ``"<n>"``, ``"<n>k"`` or ``"<n>M"`` is accepted."""

# Noise sentences tokenized per call; large enough for the fast tokenizers' batch speed-up.
_COUNT_BATCH = 256
# Noise sentences that may be skipped in a row, because they overflow the remaining budget,
# before the context is considered full.
_MAX_SKIPS = 16


def parse_length(length: str | int) -> int:
    """Turn a length name into tokens: ``"0k"`` -> 0, ``"1k"`` -> 1024, ``"1M"`` -> 1048576.

    Integers and plain digit strings are token counts.

    Raises:
        DataError: For anything else.
    """
    if isinstance(length, int) and not isinstance(length, bool):
        if length < 0:
            raise DataError(f"length must be >= 0, got {length}")
        return length
    match = re.fullmatch(r"(\d+)([kKmM]?)", str(length).strip())
    if match is None:
        raise DataError(f"bad length {length!r}: expected e.g. '0k', '4k', '128k', '1M' or 1500")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


def format_prompt(context: str, question: str) -> str:
    """The model input for a sample (used by training and by evaluation)."""
    return PROMPT_TEMPLATE.format(context=context, question=question)


def format_target(answer: str) -> str:
    """The text the model should produce after :func:`format_prompt`."""
    return TARGET_TEMPLATE.format(answer=answer)


# Fixed text on which TokenCounter measures the cost of joining sentences with spaces.
_CALIBRATION = (
    "Mary moved to the bathroom.", "Where is the football?", "It was a bright cold day in April.",
    "\u201cI shall go,\u201d said he.", "The fog drifted across the quiet meadow.",
    "John picked up the apple there.", "CHAPTER I.", "\u2018Oh dear!\u2019 thought Alice.",
    "Call me Ishmael.", "Some years ago, never mind how long precisely, I went to sea.",
    "The office is east of the hallway.", "An owl waited patiently beside the river.",
)


@dataclass
class TokenCounter:
    """Counts tokens of sentences with a tokenizer, once per distinct sentence.

    Counts are for each sentence tokenized alone, without special tokens. Joined with spaces,
    sentences can take a little more or less (byte-level BPE with a small vocabulary may spend a
    token on each space); :attr:`join_cost` estimates that per sentence from a fixed calibration
    text, so a joined length is estimated as ``sum(count) + join_cost * len(sentences)``.

    Attributes:
        tokenizer: A Hugging Face tokenizer (fast ones are much quicker here).
    """

    tokenizer: Any
    _cache: dict[str, int] = field(default_factory=dict, repr=False)
    _join_cost: float | None = field(default=None, repr=False)

    def count(self, sentences: Sequence[str]) -> list[int]:
        """Token counts of ``sentences``; unseen ones are tokenized in one batch."""
        missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        if missing:
            encoded = self.tokenizer(missing, add_special_tokens=False, verbose=False)["input_ids"]
            self._cache.update(zip(missing, map(len, encoded), strict=True))
        return [self._cache[s] for s in sentences]

    @property
    def join_cost(self) -> float:
        """Extra tokens per sentence when sentences are joined with spaces (may be negative)."""
        if self._join_cost is None:
            joined = self.tokenizer(" ".join(_CALIBRATION), add_special_tokens=False,
                                    verbose=False)["input_ids"]
            extra = len(joined) - sum(self.count(_CALIBRATION))
            self._join_cost = extra / (len(_CALIBRATION) - 1)
        return self._join_cost


@dataclass(frozen=True)
class BabilongSample:
    """A bAbI sample hidden in noise.

    Attributes:
        task: bAbI task name.
        context: Facts and noise sentences joined by spaces.
        question: The bAbI question.
        answer: The label.
        target_tokens: The requested prompt length in tokens (0 = facts only).
        num_tokens: Estimated tokens of :func:`format_prompt` (see :class:`TokenCounter`).
        num_noise_sentences: Noise sentences in ``context``.
        extra_qa: Further (question, answer) pairs asked after the answer, each in the format of
            the first (:func:`format_prompt` with an empty context, then :func:`format_target`);
            training only (see :func:`every_person_questions`).
    """

    task: str
    context: str
    question: str
    answer: str
    target_tokens: int
    num_tokens: int
    num_noise_sentences: int
    extra_qa: tuple[tuple[str, str], ...] = ()

    @property
    def prompt(self) -> str:
        return format_prompt(self.context, self.question)

    @property
    def target(self) -> str:
        return format_target(self.answer)


def _draw_noise(
    stream: Iterator[str], budget: float, counter: TokenCounter
) -> tuple[list[str], float]:
    """Take noise sentences from ``stream`` until ``budget`` tokens are (nearly) used."""
    chosen: list[str] = []
    used = 0.0
    skips = 0
    join_cost = counter.join_cost
    while used < budget and skips < _MAX_SKIPS:
        batch = list(itertools.islice(stream, _COUNT_BATCH))
        for sentence, n in zip(batch, counter.count(batch), strict=True):
            cost = n + join_cost
            if used + cost <= budget:
                chosen.append(sentence)
                used += cost
                skips = 0
            else:
                skips += 1
            if used >= budget or skips >= _MAX_SKIPS:
                break
    return chosen, used


def _last_gap_allowed(noise_sentences: Sequence[str], counter: TokenCounter, min_tail: float) -> int:
    """The last gap (before noise sentence i; len = after all) with >= ``min_tail`` tokens after it.

    0 when even the first gap has less: the facts then go as early as they can.
    """
    tail = 0.0
    index = len(noise_sentences)
    if min_tail <= 0:
        return index
    costs = counter.count(noise_sentences)
    while index > 0 and tail < min_tail:
        index -= 1
        tail += costs[index] + counter.join_cost
    return index


def build_babilong_sample(
    sample: BabiSample,
    length: str | int,
    noise: NoiseSource,
    counter: TokenCounter,
    rng: random.Random,
    min_fact_gap: int = 0,
    extra_qa: Sequence[tuple[str, str]] = (),
) -> BabilongSample:
    """Hide a bAbI sample's facts in noise up to a prompt length in tokens.

    Noise sentences are read from ``noise`` in order; one that would overflow the budget is
    skipped, and filling stops when the budget is met or after a few skips in a row, so the prompt
    ends up at most ``length`` tokens and short of it by less than a typical sentence. The facts
    keep their order and land at random gaps between noise sentences. If the facts and question
    alone exceed ``length``, there is no noise and the prompt is longer than asked.

    Args:
        sample: The bAbI sample.
        length: Target prompt length (see :func:`parse_length`); ``"0k"`` means facts only.
        noise: Where noise sentences come from.
        counter: Token counter for the model's tokenizer (reuse one across samples: it caches).
        rng: Source of all randomness for this sample (noise start, fact positions).
        min_fact_gap: At least this many tokens of the prompt (noise, then the question) follow
            the last fact, so that a recurrent model whose last segment is this long can only
            answer from its memory. Facts then land only in the gaps that leave enough noise
            after them; if no gap does (the length is too short for it), all facts come first,
            as far from the question as the length allows. 0: facts land anywhere.
        extra_qa: (question, answer) pairs asked after the sample's answer; their tokens count
            in ``length`` and in ``min_fact_gap``, like the question's.
    """
    target = parse_length(length)
    facts = list(sample.facts)
    tail = [format_prompt("", sample.question)]
    tail += [format_prompt("", q) + format_target(a) for q, a in extra_qa]
    overhead = sum(counter.count(tail))
    fact_tokens = sum(counter.count(facts)) + counter.join_cost * len(facts)
    budget = target - overhead - fact_tokens
    noise_sentences: list[str] = []
    noise_tokens = 0.0
    if target > 0 and budget > 0:
        noise_sentences, noise_tokens = _draw_noise(noise.sentences(rng), budget, counter)
    last_gap = _last_gap_allowed(noise_sentences, counter, min_fact_gap - overhead)
    # Fact i goes before noise sentence positions[i]; sorted positions keep the facts in order.
    positions = sorted(rng.randint(0, last_gap) for _ in facts)
    parts: list[str] = []
    fact_iter = iter(zip(positions, facts, strict=True))
    next_fact = next(fact_iter, None)
    for index in range(len(noise_sentences) + 1):
        while next_fact is not None and next_fact[0] == index:
            parts.append(next_fact[1])
            next_fact = next(fact_iter, None)
        if index < len(noise_sentences):
            parts.append(noise_sentences[index])
    return BabilongSample(
        task=sample.task,
        context=" ".join(parts),
        question=sample.question,
        answer=sample.answer,
        target_tokens=target,
        num_tokens=round(overhead + fact_tokens + noise_tokens),
        num_noise_sentences=len(noise_sentences),
        extra_qa=tuple(extra_qa),
    )


# A qa1 statement: "<person> <verb> to the <place>." (bAbI's five movement verbs).
_QA1_MOVE_RE = re.compile(r"(\w+) (?:went back|moved|went|journeyed|travelled) to the (\w+)\.")


def qa1_places(sample: BabiSample) -> dict[str, str]:
    """qa1: where each person the facts move is after them (their latest move).

    Raises:
        DataError: If the sample is not qa1 or a fact is not a qa1 move.
    """
    if sample.task != "qa1":
        raise DataError(f"questions about every person are for qa1, not {sample.task}")
    places: dict[str, str] = {}
    for fact in sample.facts:
        match = _QA1_MOVE_RE.fullmatch(fact)
        if match is None:
            raise DataError(f"not a qa1 move ('<person> went to the <place>.'): {fact!r}; "
                            "questions about every person need qa1 stories of moves only")
        places[match.group(1)] = match.group(2)
    return places


def every_person_questions(sample: BabiSample, rng: random.Random) -> list[tuple[str, str]]:
    """qa1: "Where is <person>?" for every other person the facts move, with where they are now.

    Asked after the sample's own question in training, these make every person's latest place
    count: bAbI's question is about the last person moved in 45% of qa1 samples, so a memory that
    keeps only the latest place already scores about half (docs/results.md). In random order.

    Raises:
        DataError: As :func:`qa1_places`.
    """
    asked = sample.question.removeprefix("Where is ").removesuffix("?")
    pairs = [(f"Where is {person}?", place) for person, place in qa1_places(sample).items()
             if person != asked]
    rng.shuffle(pairs)
    return pairs


def sample_rng(seed: int | str, index: int) -> random.Random:
    """The random generator of sample ``index``: independent of how many samples are built."""
    return random.Random(f"{seed}/{index}")


def task_labels(samples: Iterable[BabiSample | BabilongSample | Mapping[str, Any]]) -> list[str]:
    """The candidate answers of a task: every answer in ``samples``, sorted.

    BABILong scores a generation as correct when it names the true answer and no other candidate;
    this is that candidate set. Pass all the task's samples (e.g. the whole training file), not a
    small batch, so that no label is missing.
    """
    labels = set()
    for sample in samples:
        labels.add(sample["answer"] if isinstance(sample, Mapping) else sample.answer)
    return sorted(labels)
