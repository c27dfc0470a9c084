"""Data of a training run: one dataset per (stage, number of segments, split), left-padded batches.

A stage with n segments reads samples of about n * segment_size tokens: the synthetic key-recall
task builds them exactly that long; BABILong asks `rmt_scale.data.babilong_dataset` for a prompt
that leaves `answer_tokens` free in the last segment for the answer. Those datasets are built
lazily, the first time a length is needed, rank 0 first (so the `datasets` cache is filled once).
The user's own data (kinds text and qa) was read once by the run plan
(rmt_scale.training.user_data); here it is only looked up per stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rmt_scale.data import LeftPadCollator
from rmt_scale.data.synthetic import KeyRecallDataset
from rmt_scale.errors import AdapterError, ConfigError, DataError
from rmt_scale.model.loading import load_tokenizer, pad_token_id
from rmt_scale.training.config import TrainConfig

logger = logging.getLogger(__name__)

SYNTHETIC_PAD_ID = 0
ANSWER_TOKENS = 16  # BABILong: tokens of the last segment kept free for "Answer: ..." + EOS


class RunData:
    """Training and validation datasets of a run, by number of segments.

    Args:
        config: The training config.
        vocab_size: The model's vocabulary (the synthetic task draws ids below it).
        run_first: Wraps dataset building (rank 0 first, then the others); identity by default.
    """

    def __init__(self, config: TrainConfig, vocab_size: int,
                 run_first: Callable[[Callable[[], Any]], Any] = lambda build: build(),
                 user_data: Any = None):
        self.config = config
        self.vocab_size = vocab_size
        self.run_first = run_first
        self.user_data = user_data
        if config.data.kind in ("text", "qa") and user_data is None:
            # Built in code rather than by the plan: read it here, once.
            from rmt_scale.training.user_data import prepare_user_data

            self.user_data = prepare_user_data(config, run_tokenizer(config))
        if self.user_data is not None:
            self.tokenizer = self.user_data.tokenizer
        else:
            self.tokenizer = run_tokenizer(config) if config.data.kind == "babilong" else None
        pad = SYNTHETIC_PAD_ID if self.tokenizer is None else pad_token_id(self.tokenizer)
        self.collator = LeftPadCollator(pad_token_id=pad)
        self._cache: dict[tuple[int, int, str], Any] = {}

    def train(self, num_segments: int, stage: int = 0):
        """Training samples of this length in curriculum stage `stage` (the stage picks the QA
        bucket; the other kinds depend on the length only)."""
        return self._get(num_segments, "train", stage)

    def valid(self, num_segments: int, stage: int = 0):
        """Validation samples of this length, or None when there are none (data.valid_samples is
        0, no validation data, or none of this length)."""
        if not self.config.data.has_validation():
            return None
        return self._get(num_segments, "valid", stage)

    def _get(self, num_segments: int, split: str, stage: int):
        key = (stage if self.user_data is not None else 0, num_segments, split)
        if key not in self._cache:
            if self.user_data is not None:
                samples = self.user_data.train_samples if split == "train" else self.user_data.valid_samples
                self._cache[key] = samples(stage, num_segments)
                return self._cache[key]
            dataset = self.run_first(lambda: build_dataset(self.config, num_segments, split,
                                                           self.vocab_size, self.tokenizer))
            if len(dataset) == 0:
                raise DataError(f"the {split} data for {num_segments} segments is empty "
                                f"(data.kind={self.config.data.kind})")
            self._cache[key] = dataset
        return self._cache[key]

    def collate(self, samples: Sequence[dict]) -> dict[str, torch.Tensor]:
        return self.collator(samples)


def run_tokenizer(config: TrainConfig):
    """The tokenizer of the data: data.babilong.tokenizer (kind babilong), else data.tokenizer,
    else the base checkpoint's; each a directory or a model id in the local Hugging Face cache.

    Only the one named is tried: a data.tokenizer that has no tokenizer is an error, not a silent
    fallback to another tokenizer.
    """
    data = config.data
    if data.kind == "babilong" and data.babilong.tokenizer:
        key, path = "data.babilong.tokenizer", data.babilong.tokenizer
    elif data.tokenizer:
        key, path = "data.tokenizer", data.tokenizer
    elif config.model.init == "pretrained":
        key, path = "model.path", config.model.path
    else:
        where = "data.babilong.tokenizer or data.tokenizer" if data.kind == "babilong" else "data.tokenizer"
        raise ConfigError(f"data.kind={data.kind} with a random base needs a tokenizer: set {where} "
                          "(a tokenizer directory or a model id in the local Hugging Face cache)")
    expanded = _expand(path)
    try:
        # A path that does not exist may be a model id in the local cache: the loader looks it up.
        return load_tokenizer(expanded if expanded.exists() else path,
                              trust_remote_code=config.model.trust_remote_code)
    except AdapterError as err:
        raise ConfigError(f"{key}: {err}") from None


def _expand(path: str) -> Path:
    return Path(path).expanduser()


def build_dataset(config: TrainConfig, num_segments: int, split: str, vocab_size: int, tokenizer=None):
    """The samples of `num_segments` segments for split "train" or "valid"."""
    data = config.data
    seed = config.data_seed()
    count = data.num_samples if split == "train" else data.valid_samples
    segment_size = config.rmt.segment_size
    if data.kind == "synthetic":
        # Separate seeds per length and split: validation never repeats a training sample.
        return KeyRecallDataset(count, segment_size, num_segments, vocab_size,
                                key_length=data.synthetic.key_length, key_vocab=data.synthetic.key_vocab,
                                seed=seed * 1000 + 2 * num_segments + (split == "valid"))
    from rmt_scale.data import babilong_dataset

    babilong = data.babilong
    length = max(0, num_segments * segment_size - ANSWER_TOKENS)
    dataset = babilong_dataset(
        babilong.task, length, count, tokenizer, seed=seed * 1000 + num_segments,
        babi_dir=_expand(babilong.babi_dir) if babilong.babi_dir else None,
        noise_files=[str(_expand(p)) for p in babilong.noise_files] if babilong.noise_files else None,
        split=babilong.split if split == "train" else babilong.valid_split,
        hf_name=babilong.hf_name,
        min_fact_gap=segment_size if babilong.facts_before_last_segment else 0,
        every_person=babilong.ask_every_person,
    )
    return dataset.select_columns(["input_ids", "labels"])
