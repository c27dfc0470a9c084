"""Batch samples by padding on the LEFT.

Left padding is the project's convention: the recurrent model cuts inputs into segments from the
end, so every sample's last segment (where the question and answer are) lines up at the right edge
of the batch, and generation continues from the last column for all samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rmt_scale.errors import DataError
from rmt_scale.model.segments import IGNORE_INDEX


@dataclass
class LeftPadCollator:
    """Pad ``input_ids`` (and ``labels`` when present) on the left into tensors.

    Attributes:
        pad_token_id: Id written into padded ``input_ids`` (the model never attends to it).
        pad_to_multiple_of: Round the batch length up to a multiple of this, e.g. the segment size,
            so that segments start at the same column in every batch; None to not round.
        label_pad_id: Label of padded positions (ignored by the loss).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    label_pad_id: int = IGNORE_INDEX

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate samples with ``input_ids`` and optional ``labels`` (other keys are ignored).

        Returns:
            ``input_ids`` and ``attention_mask`` (0 on padding) of shape (B, T), and ``labels``
            (B, T) if the samples have them.
        """
        if not features:
            raise DataError("cannot collate an empty batch")
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        has_labels = "labels" in features[0]
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), self.label_pad_id, dtype=torch.long)
        for row, (feature, length) in enumerate(zip(features, lengths, strict=True)):
            if length == 0:
                continue
            input_ids[row, -length:] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, -length:] = 1
            if has_labels:
                if len(feature["labels"]) != length:
                    raise DataError(f"sample {row}: {len(feature['labels'])} labels for "
                                    f"{length} input_ids")
                labels[row, -length:] = torch.as_tensor(feature["labels"], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if has_labels:
            batch["labels"] = labels
        return batch
