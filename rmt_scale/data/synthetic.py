"""A built-in synthetic task that needs memory: recall a key shown segments earlier.

Sample layout (T = num_segments * segment_size tokens)::

    segment 0                    segments 1 .. N-2        last segment
    [BOS key_1..key_k filler..]  [filler ...]             [filler .. QUERY key_1..key_k]
                                                                       ^ labelled

The key is drawn fresh for every sample and appears only in the first segment; the model must
produce it after the query marker at the end of the last. Without memory the last segment holds no
trace of the key, so accuracy stays at chance (1 / key_vocab per token). Filler tokens are random,
so nothing but the memory can carry the key forward.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from rmt_scale.errors import DataError
from rmt_scale.model.segments import IGNORE_INDEX

BOS, QUERY = 1, 3  # token ids 0 (pad) and 2 (eos) are left to the tokenizer conventions


class KeyRecallDataset(Dataset):
    """Deterministic synthetic key-recall samples for tiny random models.

    Args:
        num_samples: Dataset size.
        segment_size: Tokens per segment of the model that will read it.
        num_segments: Segments per sample; the key sits in the first, the query in the last.
        vocab_size: Vocabulary of the model; ids below 4 are reserved markers.
        key_length: Tokens in the key.
        key_vocab: Keys are drawn from ids [4, 4 + key_vocab); filler from the rest, so a key
            token never appears as filler. Chance accuracy is 1 / key_vocab per token.
        seed: Samples depend only on (seed, index), so any rank or epoch sees the same data.
    """

    def __init__(self, num_samples: int, segment_size: int, num_segments: int, vocab_size: int,
                 key_length: int = 2, key_vocab: int = 8, seed: int = 0):
        if num_samples <= 0:
            raise DataError(f"num_samples must be positive, got {num_samples}")
        if num_segments < 1 or segment_size < key_length + 2:
            raise DataError(
                f"need num_segments >= 1 and segment_size >= key_length + 2, got "
                f"{num_segments} and {segment_size}"
            )
        if vocab_size < 4 + key_vocab + 2:
            raise DataError(f"vocab_size {vocab_size} too small for key_vocab {key_vocab}; "
                            f"it needs at least {4 + key_vocab + 2}")
        self.num_samples = num_samples
        self.segment_size = segment_size
        self.num_segments = num_segments
        self.vocab_size = vocab_size
        self.key_length = key_length
        self.key_vocab = key_vocab
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        length = self.num_segments * self.segment_size
        filler_low = 4 + self.key_vocab
        ids = torch.randint(filler_low, self.vocab_size, (length,), generator=generator)
        key = torch.randint(4, filler_low, (self.key_length,), generator=generator)
        k = self.key_length
        ids[0] = BOS
        ids[1 : 1 + k] = key
        ids[-k - 1] = QUERY
        ids[-k:] = key
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[-k:] = key
        return {"input_ids": ids, "labels": labels}


def key_recall_accuracy(logits_or_predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of labelled positions predicted right.

    Args:
        logits_or_predictions: (B, T, V) logits or (B, T) predicted ids, position t predicting t+1.
        labels: (B, T) labels as in the dataset.
    """
    predictions = logits_or_predictions
    if predictions.dim() == 3:
        predictions = predictions.argmax(-1)
    predicted = predictions[:, :-1]
    targets = labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    return (predicted[labelled] == targets[labelled]).float().mean().item()
