"""How a batch is cut into segments: alignment, padding and shifted targets.

Each sample is split left to right into segments of `segment_size` real tokens, the last one
shorter when the length is not a multiple: exactly what the sample gives when it runs alone.

In a batch of different lengths the samples' LAST segments are aligned: step `N-1` holds every
sample's last segment, a sample with `n_i < N` segments starts at step `N - n_i`, and before that it
is inactive (its memory waits unchanged). Inside a step, shorter segments are left-padded. This is
what makes batched results equal to single-sample results, and it puts every sample's final tokens
(the question of a BABILong sample) at the right edge of the last step, where generation continues.

Targets follow a plain causal LM over the whole sequence: the hidden state of real token `j`
predicts real token `j+1`, also when `j+1` lies in the next segment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rmt_scale.errors import DataError

IGNORE_INDEX = -100


@dataclass
class SegmentStep:
    """One step of the recurrence: the segment of every active sample.

    Attributes:
        index: Step number, 0..num_steps-1.
        rows: Indices (b,) of the samples active in this step, or None when all are.
        input_ids: Segment tokens, left-padded, (b, l).
        token_mask: 1 on real tokens, (b, l); None when nothing is padded.
        targets: Next-token targets of each position, IGNORE_INDEX where none, (b, l); None
            when no labels were given.
        source: For each (row, position), the flat index into the (B, T) input it came from, so
            logits can be put back in input order; None for the unpadded case (plain slices).
    """

    index: int
    rows: torch.Tensor | None
    input_ids: torch.Tensor
    token_mask: torch.Tensor | None
    targets: torch.Tensor | None
    source: torch.Tensor | None
    start: int = 0  # unpadded case: the slice [start, start + l) of the input


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """targets[:, t] = labels[:, t+1]; the last position predicts nothing."""
    pad = labels.new_full((labels.shape[0], 1), IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


class SegmentPlan:
    """The segment steps of one batch. Steps are made lazily, so a 1M-token input costs only
    its own ids, never a copy per step.

    Args:
        input_ids: (B, T) token ids.
        attention_mask: (B, T), 1 on real tokens; any padding side. None: no padding.
        labels: (B, T) or None; IGNORE_INDEX is not scored.
        segment_size: Real tokens per segment.
    """

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 labels: torch.Tensor | None, segment_size: int):
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(
                f"labels shape {tuple(labels.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                f"{tuple(input_ids.shape)}"
            )
        self.input_ids = input_ids
        self.segment_size = segment_size
        batch, total = input_ids.shape
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        self.padded = attention_mask is not None
        if not self.padded:
            if total == 0:
                raise DataError("input_ids is empty: every sample needs at least one token")
            self.targets = shift_targets(labels) if labels is not None else None
            self.num_steps = -(-total // segment_size)
            return
        # Per-sample real-token positions, in order; labels shifted over real tokens only, so a
        # padded sample gets exactly the targets it has alone.
        mask = attention_mask.bool()
        self.positions = [mask[i].nonzero().squeeze(-1) for i in range(batch)]
        self.lengths = [int(p.numel()) for p in self.positions]
        empty = [i for i, n in enumerate(self.lengths) if n == 0]
        if empty:
            raise DataError(f"samples {empty} have no tokens (attention_mask all 0)")
        self.sample_targets = None
        if labels is not None:
            self.sample_targets = [
                shift_targets(labels[i, p].unsqueeze(0)).squeeze(0) for i, p in enumerate(self.positions)
            ]
        self.num_segments = [-(-n // segment_size) for n in self.lengths]
        self.num_steps = max(self.num_segments)

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self) -> Iterator[SegmentStep]:
        for index in range(self.num_steps):
            yield self.step(index)

    def step(self, index: int) -> SegmentStep:
        size = self.segment_size
        if not self.padded:
            start = index * size
            end = min(start + size, self.input_ids.shape[1])
            targets = self.targets[:, start:end] if self.targets is not None else None
            return SegmentStep(index, None, self.input_ids[:, start:end], None, targets, None, start)
        active = [i for i, n in enumerate(self.num_segments) if index >= self.num_steps - n]
        spans = []
        for i in active:
            segment = index - (self.num_steps - self.num_segments[i])
            start = segment * size
            spans.append((start, min(start + size, self.lengths[i])))
        length = max(end - start for start, end in spans)
        device = self.input_ids.device
        ids = self.input_ids.new_zeros(len(active), length)
        token_mask = torch.zeros(len(active), length, dtype=torch.long, device=device)
        source = torch.full((len(active), length), -1, dtype=torch.long, device=device)
        targets = None
        if self.sample_targets is not None:
            targets = torch.full((len(active), length), IGNORE_INDEX, dtype=torch.long, device=device)
        total = self.input_ids.shape[1]
        for row, (i, (start, end)) in enumerate(zip(active, spans)):
            pad = length - (end - start)
            where = self.positions[i][start:end]
            ids[row, pad:] = self.input_ids[i, where]
            token_mask[row, pad:] = 1
            source[row, pad:] = i * total + where
            if targets is not None:
                targets[row, pad:] = self.sample_targets[i][start:end]
        all_rows = len(active) == len(self.num_segments)
        rows = None if all_rows else torch.tensor(active, dtype=torch.long, device=device)
        if bool(token_mask.all()):
            token_mask = None
        return SegmentStep(index, rows, ids, token_mask, targets, source)
