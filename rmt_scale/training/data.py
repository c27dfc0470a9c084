"""Data of a training run: one dataset per (number of segments, split), left-padded batches.

A stage with n segments reads samples of about n * segment_size tokens: the synthetic key-recall
task builds them exactly that long; BABILong asks `rmt_scale.data.babilong_dataset` for a prompt
that leaves `answer_tokens` free in the last segment for the answer. Datasets are built lazily,
the first time a length is needed, rank 0 first (so the `datasets` cache is filled once).
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
                 run_first: Callable[[Callable[[], Any]], Any] = lambda build: build()):
        self.config = config
        self.vocab_size = vocab_size
        self.run_first = run_first
        self.tokenizer = run_tokenizer(config) if config.data.kind == "babilong" else None
        pad = SYNTHETIC_PAD_ID if self.tokenizer is None else pad_token_id(self.tokenizer)
        self.collator = LeftPadCollator(pad_token_id=pad)
        self._cache: dict[tuple[int, str], Any] = {}

    def train(self, num_segments: int):
        return self._get(num_segments, "train")

    def valid(self, num_segments: int):
        """Validation samples of this length, or None when data.valid_samples is 0."""
        if self.config.data.valid_samples == 0:
            return None
        return self._get(num_segments, "valid")

    def _get(self, num_segments: int, split: str):
        key = (num_segments, split)
        if key not in self._cache:
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
    """The tokenizer of BABILong data: data.babilong.tokenizer, else the base checkpoint's.

    Only the one directory is tried: a data.babilong.tokenizer that has no tokenizer is an error,
    not a silent fallback to another tokenizer.
    """
    path = config.data.babilong.tokenizer or config.model.path
    if path is None:
        raise ConfigError("data.kind=babilong needs a tokenizer: set data.babilong.tokenizer or model.path")
    try:
        return load_tokenizer(_expand(path), trust_remote_code=config.model.trust_remote_code)
    except AdapterError as err:
        key = "data.babilong.tokenizer" if config.data.babilong.tokenizer else "model.path"
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
    )
    return dataset.select_columns(["input_ids", "labels"])
