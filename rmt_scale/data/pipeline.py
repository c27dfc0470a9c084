"""Tokenised, cached BABILong datasets (``datasets.Dataset``) for training and evaluation.

Two cached steps, both keyed by :func:`rmt_scale.data.caching.cache_key` so that a second run with
the same inputs reuses the Arrow files in ``cache_dir``:

1. ``Dataset.from_generator`` writes the text samples (context, question, answer);
2. ``Dataset.map`` tokenises them into ``input_ids`` / ``labels`` / ``prompt_length``.

Columns of the result:

* ``input_ids``: prompt + answer + EOS (the tokenizer's special tokens, e.g. BOS, on the prompt).
* ``labels``: -100 on the prompt, the answer and EOS token ids after it.
  With ``every_person`` (training), further questions and answers come between the answer and
  EOS; their answers carry labels too.
* ``prompt_length``: tokens of the prompt; generate from ``input_ids[:prompt_length]``.
* ``task``, ``question``, ``answer``: for scoring (see :func:`rmt_scale.data.task_labels`).
* ``target_tokens``: the requested length in tokens.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from rmt_scale.data.babi import BabiSample, load_babi_dir, task_number
from rmt_scale.data.babilong import (
    PROMPT_TEMPLATE,
    TARGET_TEMPLATE,
    TokenCounter,
    build_babilong_sample,
    every_person_questions,
    format_prompt,
    format_target,
    parse_length,
    qa1_places,
    sample_rng,
)
from rmt_scale.data.caching import cache_key, file_stamps, tokenizer_hash
from rmt_scale.data.generator import generate_babi, require_generator
from rmt_scale.data.hub import load_babi_hub
from rmt_scale.data.noise import NoiseSource, load_noise
from rmt_scale.errors import DataError
from rmt_scale.model.segments import IGNORE_INDEX

logger = logging.getLogger(__name__)

_TEXT_FEATURES = datasets.Features({
    "task": datasets.Value("string"),
    "context": datasets.Value("string"),
    "question": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "target_tokens": datasets.Value("int64"),
})
# With every_person: the questions asked after the answer, and their answers.
_EXTRA_QA_FEATURES = datasets.Features({
    **_TEXT_FEATURES,
    "extra_questions": datasets.Sequence(datasets.Value("string")),
    "extra_answers": datasets.Sequence(datasets.Value("string")),
})


def load_babi_samples(
    task: str,
    split: str = "train",
    babi_dir: str | Path | None = None,
    hf_name: str | None = None,
    num_generated: int = 1000,
    valid_fraction: float = 0.1,
    split_seed: int = 0,
) -> list[BabiSample]:
    """bAbI samples from a directory, else a Hub dataset, else the built-in generator.

    Args:
        task: ``"qa1"`` .. ``"qa20"`` (the generator knows qa1-qa3).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        babi_dir: Directory of bAbI files ``qa{N}_*_{split}.txt``.
        hf_name: Hub dataset with the ``babi_qa`` schema, used when ``babi_dir`` is None.
        num_generated: Questions to generate when neither is given.
        valid_fraction: Held-out story fraction for validation from a train file.
        split_seed: Fixes which stories are held out; generated splits use different seeds.
    """
    if babi_dir is not None:
        return load_babi_dir(task, babi_dir, split, valid_fraction, split_seed)
    if hf_name is not None:
        return load_babi_hub(task, hf_name, split)
    return generate_babi(task, num_generated, seed=f"{split_seed}/{split}")


def _select(samples: Sequence[BabiSample], num_samples: int | None, seed: int | str) -> list[int]:
    """Indices of the samples to build: a seeded shuffle, repeated if more are asked for."""
    rng = random.Random(f"{seed}/select")
    wanted = len(samples) if num_samples is None else num_samples
    order: list[int] = []
    while len(order) < wanted:
        block = list(range(len(samples)))
        rng.shuffle(block)
        order.extend(block)
    return order[:wanted]


def _generate_text_samples(
    samples: Sequence[BabiSample],
    target: int,
    num_samples: int | None,
    seed: int | str,
    noise: NoiseSource,
    tokenizer: Any,
    min_fact_gap: int = 0,
    every_person: bool = False,
):
    """Generator for ``Dataset.from_generator``: one text record per BABILong sample."""
    counter = TokenCounter(tokenizer)
    for index, sample_index in enumerate(_select(samples, num_samples, seed)):
        sample = samples[sample_index]
        # Its own generator: the option takes no draws from the sample's (noise start, fact places).
        extra = (every_person_questions(sample, random.Random(f"{seed}/{index}/people"))
                 if every_person else [])
        built = build_babilong_sample(sample, target, noise, counter, sample_rng(seed, index),
                                      min_fact_gap, extra)
        record = {"task": built.task, "context": built.context, "question": built.question,
                  "answer": built.answer, "target_tokens": built.target_tokens}
        if every_person:
            record["extra_questions"] = [q for q, _ in built.extra_qa]
            record["extra_answers"] = [a for _, a in built.extra_qa]
        yield record


def _tokenize(batch: dict[str, list], tokenizer: Any) -> dict[str, list]:
    """Prompt and target tokenised apart, so ``prompt_length`` is exactly what generation sees."""
    prompts = [format_prompt(context, question)
               for context, question in zip(batch["context"], batch["question"], strict=True)]
    targets = [format_target(a) for a in batch["answer"]]
    prompt_ids = tokenizer(prompts, verbose=False)["input_ids"]
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    extras = _tokenize_extra_qa(batch, tokenizer) if "extra_questions" in batch else None
    out: dict[str, list] = {"input_ids": [], "labels": [], "prompt_length": []}
    for index, (prompt, target) in enumerate(zip(prompt_ids, target_ids, strict=True)):
        input_ids = prompt + target
        labels = [IGNORE_INDEX] * len(prompt) + target
        for question, answer in extras[index] if extras else ():
            input_ids += question + answer
            labels += [IGNORE_INDEX] * len(question) + answer
        out["input_ids"].append(input_ids + eos)
        out["labels"].append(labels + eos)
        out["prompt_length"].append(len(prompt))
    return out


def _tokenize_extra_qa(batch: dict[str, list], tokenizer: Any) -> list[list[tuple[list, list]]]:
    """Per record, the (question ids, answer ids) of its extra questions, in order."""
    def ids(texts: list[str]) -> Any:
        return iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else ())

    question_ids = ids([format_prompt("", q) for qs in batch["extra_questions"] for q in qs])
    answer_ids = ids([format_target(a) for answers in batch["extra_answers"] for a in answers])
    return [[(next(question_ids), next(answer_ids)) for _ in qs] for qs in batch["extra_questions"]]


def _babi_stamps(task: str, babi_dir: str | Path) -> list[list[Any]]:
    prefix = f"qa{task_number(task)}_"
    return file_stamps(sorted(p for p in Path(babi_dir).iterdir() if p.name.startswith(prefix)))


def babilong_dataset(
    task: str,
    length: str | int,
    num_samples: int | None,
    tokenizer: Any,
    seed: int = 0,
    babi_dir: str | Path | None = None,
    noise_files: Sequence[str | Path] | None = None,
    split: str = "train",
    *,
    hf_name: str | None = None,
    cache_dir: str | Path | None = None,
    valid_fraction: float = 0.1,
    split_seed: int = 0,
    keep_context: bool = False,
    min_fact_gap: int = 0,
    every_person: bool = False,
) -> datasets.Dataset:
    """A tokenised BABILong-style dataset for one task and length.

    Args:
        task: ``"qa1"`` .. ``"qa20"``; without ``babi_dir`` or ``hf_name`` only qa1-qa3.
        length: Prompt length, e.g. ``"0k"`` (facts only), ``"4k"``, ``"1M"`` or a token count.
        num_samples: Samples to build; None builds one per question of the split (1000
            generated questions without ``babi_dir``/``hf_name``). More than there are questions
            repeats questions with other noise.
        tokenizer: The model's Hugging Face tokenizer.
        seed: Seed of sample choice, noise and fact positions (not of the split).
        babi_dir: Directory of bAbI files; None uses the built-in generator.
        noise_files: Plain-text books for noise; None uses the built-in filler
            (:class:`rmt_scale.data.FillerNoise`).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        hf_name: Hub dataset with the ``babi_qa`` schema, when ``babi_dir`` is None.
        cache_dir: Where ``datasets`` keeps the Arrow files; default: the HF datasets cache.
        valid_fraction: Held-out story fraction when validation comes from a train file.
        split_seed: Which stories are held out; keep it fixed across runs.
        keep_context: Keep the ``context`` text column (large for long lengths).
        min_fact_gap: Tokens of prompt that follow the last fact at least (see
            :func:`rmt_scale.data.build_babilong_sample`); 0 places facts anywhere.
        every_person: qa1 only, for training: after the answer, ask where every other person of
            the story is (:func:`rmt_scale.data.babilong.every_person_questions`), with labels on
            those answers too.

    Raises:
        DataError: For an unknown task, split or length, a missing or malformed file, or a task
            without a built-in generator when no data source is given.
    """
    task_number(task)
    target = parse_length(length)
    if babi_dir is None and hf_name is None:
        require_generator(task)
    babi_dir = None if babi_dir is None else str(babi_dir)
    noise_files = None if not noise_files else [str(p) for p in noise_files]
    # Loaded here rather than in the generator so that a bad file raises DataError itself, not
    # wrapped by `datasets`; and before the cache key, which stats the files this checks. Both are
    # quick next to building and tokenising.
    samples = load_babi_samples(task, split, babi_dir, hf_name, num_samples or 1000,
                                valid_fraction, split_seed)
    key = cache_key(
        "babilong", task=task, target=target, num_samples=num_samples, seed=seed, split=split,
        babi=None if babi_dir is None else _babi_stamps(task, babi_dir), hf_name=hf_name,
        noise=None if noise_files is None else file_stamps(noise_files),
        valid_fraction=valid_fraction, split_seed=split_seed, tokenizer=tokenizer_hash(tokenizer),
        templates=[PROMPT_TEMPLATE, TARGET_TEMPLATE],
        # Only when set, so that the datasets cached before the option existed stay valid.
        **({"min_fact_gap": min_fact_gap} if min_fact_gap else {}),
        **({"every_person": True} if every_person else {}),
    )
    if not samples:
        raise DataError(f"no {task} samples for split {split!r}")
    if every_person:
        # Checked here for the same reason: a story the generator cannot ask about would raise
        # inside `datasets`, which hides the DataError in its own generation error.
        for sample in samples:
            qa1_places(sample)
    if num_samples is not None and num_samples > len(samples):
        logger.warning("%s %s: %d samples asked, %d questions exist; questions repeat with "
                       "different noise", task, split, num_samples, len(samples))
    noise = load_noise(noise_files)
    text = datasets.Dataset.from_generator(
        _generate_text_samples,
        features=_EXTRA_QA_FEATURES if every_person else _TEXT_FEATURES,
        cache_dir=None if cache_dir is None else str(cache_dir),
        fingerprint=key,
        # A tuple, not a list: `datasets` shards list-valued gen_kwargs into one generator call
        # per element.
        gen_kwargs={"samples": tuple(samples), "target": target, "num_samples": num_samples,
                    "seed": seed, "noise": noise, "tokenizer": tokenizer,
                    "min_fact_gap": min_fact_gap, "every_person": every_person},
    )
    # Long samples are large; smaller batches bound the memory of one map step.
    batch_size = max(1, min(1000, (1 << 22) // max(target, 1)))
    return text.map(
        _tokenize,
        batched=True,
        batch_size=batch_size,
        writer_batch_size=batch_size,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=None if keep_context else ["context"],
        new_fingerprint=f"{key}-tokenized-{keep_context}",
        desc=f"Tokenizing {task} {length}",
    )
