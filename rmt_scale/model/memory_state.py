"""Memory states: what reading a document leaves, to be continued by more text or by a prompt.

A document of n tokens is cut into segments of S = segment_size tokens from its first token, as
`forward` and `generate` cut it. Its memory state is

    memory      (M, D)   the memory after every *full* segment: k = n // S segments read
    tail_ids    (t,)     the t = n - k*S tokens after them (0 <= t < S), not read into memory yet
    tokens_read          n

The unfinished last segment stays as tokens: more text would change what that segment holds, and
`generate` reads a last segment as `[memory | tokens]` rather than into memory. Keeping it is what
makes a state exact:

    read(read(initial, a), b)            == read(initial, a + b)      (same tensors)
    generate_from_states([read(d)], [q]) == generate(d + q)           (same tokens)

for a batch of one on one device and dtype. Rows of a batch match their single-row results to
float tolerance, as padded batches do everywhere (see segments.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rmt_scale.errors import MemoryStateError

if TYPE_CHECKING:
    from rmt_scale.model.recurrent import RecurrentMemoryModel


@dataclass
class MemoryState:
    """The memory of one document read so far.

    Attributes:
        memory: (M, D) memory after every full segment read.
        tail_ids: (t,) int64 ids of the unfinished last segment, 0 <= t < segment_size.
        tokens_read: Tokens read in all, full segments and tail.
    """

    memory: torch.Tensor
    tail_ids: torch.Tensor
    tokens_read: int

    def __post_init__(self) -> None:
        if self.memory.dim() != 2:
            raise MemoryStateError(
                f"a memory state's memory is (num_mem_tokens, hidden), got shape {tuple(self.memory.shape)}"
            )
        if self.tail_ids.dim() != 1 or self.tail_ids.dtype != torch.long:
            raise MemoryStateError(
                f"a memory state's tail_ids are 1-D int64 ids, got {self.tail_ids.dtype} "
                f"of shape {tuple(self.tail_ids.shape)}"
            )
        if self.tokens_read < self.tail_ids.numel():
            raise MemoryStateError(
                f"a memory state cannot hold {self.tail_ids.numel()} unread tokens after reading "
                f"only {self.tokens_read}"
            )


def initial_state(model: RecurrentMemoryModel) -> MemoryState:
    """The state of having read nothing: the learned initial memory and no tokens."""
    memory = model.memory.detach().clone()
    return MemoryState(memory, torch.zeros(0, dtype=torch.long, device=memory.device), 0)


def check_state(model: RecurrentMemoryModel, state: MemoryState) -> None:
    """Raise MemoryStateError if `state` cannot have been read by a model shaped like `model`."""
    expected = tuple(model.memory.shape)
    if tuple(state.memory.shape) != expected:
        raise MemoryStateError(
            f"the memory state's memory is {tuple(state.memory.shape)} but this model's is {expected} "
            "(num_mem_tokens, hidden); it was read by another model"
        )
    if state.memory.dtype != model.memory.dtype:
        raise MemoryStateError(
            f"the memory state holds {state.memory.dtype} memory but this model runs in "
            f"{model.memory.dtype}; load the model in the dtype the state was read with"
        )
    if state.tail_ids.numel() >= model.config.segment_size:
        raise MemoryStateError(
            f"the memory state has {state.tail_ids.numel()} unread tokens, not fewer than "
            f"segment_size {model.config.segment_size}; it was read with another segment_size"
        )


def as_ids(ids: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1:
        raise ValueError(f"each document or prompt is 1-D token ids, got shape {tuple(ids.shape)}")
    return ids.to(device)


def left_pad(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) ids and attention mask of 1-D rows, left-padded; mask None when nothing is padded.

    The pad id is never read: segments gather real tokens only.
    """
    length = max(row.numel() for row in rows)
    ids = rows[0].new_zeros(len(rows), length)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, length - row.numel() :] = row
        mask[i, length - row.numel() :] = 1
    return ids, None if bool(mask.all()) else mask


def _joined(model: RecurrentMemoryModel, states: Sequence[MemoryState],
            more: Sequence[torch.Tensor | Sequence[int]], what: str) -> list[torch.Tensor]:
    """Each state's tail followed by its new ids, on the model's device."""
    if len(states) != len(more):
        raise ValueError(f"{len(states)} memory states but {len(more)} {what}; give one per state")
    device = model.memory.device
    joined = []
    for state, ids in zip(states, more):
        check_state(model, state)
        joined.append(torch.cat([state.tail_ids.to(device), as_ids(ids, device)]))
    return joined


@torch.no_grad()
def read_into_states(model: RecurrentMemoryModel, input_ids: Sequence[torch.Tensor | Sequence[int]],
                     states: Sequence[MemoryState] | None = None,
                     progress: Callable[[int], None] | None = None) -> list[MemoryState]:
    """Read each document (1-D ids) on from its state (default: the initial state).

    Every segment the tail and the new ids complete is read into memory, in one batch for all
    documents; what is left becomes the new tail.
    """
    if states is None:
        states = [initial_state(model)] * len(input_ids)
    joined = _joined(model, states, input_ids, "documents")
    size = model.config.segment_size
    full = [(ids.numel() // size) * size for ids in joined]
    memories = [state.memory for state in states]
    rows = [i for i, n in enumerate(full) if n]
    if rows:
        ids, mask = left_pad([joined[i][: full[i]] for i in rows])
        start = torch.stack([states[i].memory.to(model.memory.device) for i in rows])  # (b, M, D)
        memory, _ = model.read_context(ids, mask, progress, memory=start, read_last=True)
        for row, i in enumerate(rows):
            memories[i] = memory[row].clone()  # its own storage: a state outlives the batch
    return [
        MemoryState(memories[i], joined[i][full[i] :].clone(),
                    states[i].tokens_read + joined[i].numel() - states[i].tail_ids.numel())
        for i in range(len(states))
    ]


@torch.no_grad()
def generate_from_states(model: RecurrentMemoryModel, states: Sequence[MemoryState],
                         prompt_ids: Sequence[torch.Tensor | Sequence[int]], max_new_tokens: int = 16,
                         progress: Callable[[int], None] | None = None, **generate_kwargs) -> torch.Tensor:
    """Generate after each state's tail followed by its prompt, as `generate(document + prompt)`.

    Returns:
        (B, n) new token ids; finished rows are padded with the pad (or eos) id.
    """
    if not states:
        raise ValueError("no memory states to generate from")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    joined = _joined(model, states, prompt_ids, "prompts")
    empty = [i for i, ids in enumerate(joined) if ids.numel() == 0]
    if empty:
        raise ValueError(
            f"rows {empty} have neither unread tokens nor a prompt; give a prompt to continue from"
        )
    ids, mask = left_pad(joined)
    start = torch.stack([state.memory.to(model.memory.device) for state in states])  # (B, M, D)
    memory, last = model.read_context(ids, mask, progress, memory=start)
    return model.generate_after(memory, last.input_ids, last.token_mask, max_new_tokens, progress,
                                **generate_kwargs)
