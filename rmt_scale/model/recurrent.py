"""RecurrentMemoryModel: the loop over segments that carries memory from one to the next.

    memory_0 = model.memory                        (M, D), trainable
    for step s = 0 .. N-1:
        memory_s = truncate_gradient(memory_s, s, N, bptt_depth)
        token_hidden, memory_{s+1} = cell(memory_s, segment_s)     # checkpointed when asked
        loss_sum += CE(lm_head(token_hidden[labelled]), targets)     # per segment, never (T x V)
    loss = loss_sum / labelled tokens

See `segments.py` for how a batch is cut and aligned, `memory.py` for one segment's layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

from rmt_scale.config import RMTConfig
from rmt_scale.errors import ConfigError
from rmt_scale.model import memory_state
from rmt_scale.model.loading import pad_token_id
from rmt_scale.model.memory import MemoryCell, max_positions
from rmt_scale.model.memory_state import MemoryState
from rmt_scale.model.saving import read_adapter, write_adapter
from rmt_scale.model.segments import IGNORE_INDEX, SegmentPlan, SegmentStep


def truncate_gradient(memory: torch.Tensor, step: int, num_steps: int, bptt_depth: int | None) -> torch.Tensor:
    """Return the memory entering `step`, cut from the graph where BPTT must stop.

    With `bptt_depth=k`, gradients flow back through at most k memory transitions. The cuts are
    placed every k+1 steps counting back from the last step, so the last segment's loss reaches
    back exactly k transitions and no loss reaches further. The initial memory (step 0) is the
    parameter itself and is never cut.
    """
    if bptt_depth is None or step == 0:
        return memory
    if (num_steps - 1 - step) % (bptt_depth + 1) == bptt_depth:
        return memory.detach()
    return memory


@dataclass
class RecurrentMemoryOutput(ModelOutput):
    """Output of `RecurrentMemoryModel.forward`.

    Attributes:
        loss: Mean next-token loss over all labelled tokens of the batch (None without labels).
        logits: (B, T, V) in input order, only when `return_logits=True` (zeros on padding).
        sample_loss: (B,) mean loss of each sample over its own labelled tokens (NaN if none).
        predictions: (B, T) argmax prediction at every position whose next token is labelled
            (what the loss scored), -100 elsewhere: accuracy without (T x V) logits.
        segment_loss_sum: (N,) summed loss of each step, detached; with `segment_tokens` gives
            per-segment perplexity.
        segment_tokens: (N,) number of labelled tokens of each step.
        memory: (B, M, D) the memory after the last segment.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    sample_loss: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    segment_loss_sum: torch.Tensor | None = None
    segment_tokens: torch.Tensor | None = None
    memory: torch.Tensor | None = None


class RecurrentMemoryModel(nn.Module):
    """A causal LM with recurrent memory over segments (RMT).

    Build it with `RecurrentMemoryModel.wrap(base, RMTConfig(...))`. The base stays unchanged
    (PEFT adapters attached to it train as usual); the only new parameter is `memory`.
    """

    def __init__(self, base: nn.Module, config: RMTConfig):
        super().__init__()
        self.config = config
        self.cell = MemoryCell(base, config)

    @classmethod
    def wrap(cls, base: nn.Module, config: RMTConfig | None = None) -> RecurrentMemoryModel:
        """Wrap a transformers causal LM (or a PEFT model of one) with memory."""
        return cls(base, config if config is not None else RMTConfig())

    @property
    def memory(self) -> nn.Parameter:
        """The initial memory, (num_mem_tokens, hidden_size)."""
        return self.cell.memory

    @property
    def base(self) -> nn.Module:
        return self.cell.base

    def initial_memory(self, batch_size: int) -> torch.Tensor:
        return self.memory.unsqueeze(0).expand(batch_size, -1, -1)  # (B, M, D)

    def _run_step(self, memory: torch.Tensor, step: SegmentStep, want_logits: bool):
        """One segment: new memory, per-row loss sums and counts, predictions, logits if asked."""
        token_hidden, new_memory = self.cell(memory, step.input_ids, step.token_mask)  # (b, l, D)
        rows = token_hidden.shape[0]
        loss_sum = token_hidden.new_zeros(rows, dtype=torch.float32)
        count = torch.zeros(rows, dtype=torch.long, device=token_hidden.device)
        predictions = None
        if step.targets is not None:
            labelled = step.targets != IGNORE_INDEX  # (b, l)
            predictions = torch.full_like(step.targets, IGNORE_INDEX)
            if labelled.any():
                # Only labelled positions go through the LM head: for QA data that is a few tokens.
                logits = self.cell.lm_head(token_hidden[labelled]).float()  # (n, V)
                token_loss = F.cross_entropy(logits, step.targets[labelled], reduction="none")
                row_of = labelled.nonzero()[:, 0]
                loss_sum = loss_sum.index_add(0, row_of, token_loss)
                count = labelled.sum(dim=1)
                predictions[labelled] = logits.detach().argmax(-1)
        logits = self.cell.lm_head(token_hidden) if want_logits else None
        return new_memory, loss_sum, count, predictions, logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_logits: bool = False,
                memory: torch.Tensor | None = None) -> RecurrentMemoryOutput:
        """Run the whole sequence segment by segment.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T), 1 on real tokens (left padding is the convention; any works).
            labels: (B, T) targets as for a plain causal LM (shifted inside); -100 is ignored.
            return_logits: Also return (B, T, V) logits. Off by default: long inputs would
                otherwise hold tokens x vocab floats.
            memory: (B, M, D) memory to start from instead of the learned initial memory.

        Returns:
            RecurrentMemoryOutput.
        """
        plan = SegmentPlan(input_ids, attention_mask, labels, self.config.segment_size)
        batch = input_ids.shape[0]
        state = self.initial_memory(batch) if memory is None else memory
        use_checkpoint = self.config.segment_checkpointing and torch.is_grad_enabled() and self.training
        loss_sum = torch.zeros(batch, dtype=torch.float32, device=input_ids.device)
        count = torch.zeros(batch, dtype=torch.long, device=input_ids.device)
        segment_loss, segment_tokens, logits_out, predictions_out = [], [], None, None
        for step in plan:
            state = truncate_gradient(state, step.index, len(plan), self.config.bptt_depth)
            memory_in = state if step.rows is None else state.index_select(0, step.rows)
            if use_checkpoint:
                new_memory, step_loss, step_count, predictions, logits = checkpoint(
                    self._run_step, memory_in, step, return_logits, use_reentrant=False
                )
            else:
                new_memory, step_loss, step_count, predictions, logits = self._run_step(
                    memory_in, step, return_logits
                )
            state = self._advance(state, step, new_memory)
            if step.rows is None:
                loss_sum = loss_sum + step_loss
                count = count + step_count
            else:
                loss_sum = loss_sum.index_add(0, step.rows, step_loss)
                count = count.index_add(0, step.rows, step_count)
            segment_loss.append(step_loss.detach().sum())
            segment_tokens.append(step_count.sum())
            if return_logits:
                logits_out = self._place(logits_out, logits, step, input_ids, fill=0)
            if predictions is not None:
                predictions_out = self._place(predictions_out, predictions, step, input_ids, fill=IGNORE_INDEX)
        output = RecurrentMemoryOutput(
            logits=logits_out,
            segment_loss_sum=torch.stack(segment_loss),
            segment_tokens=torch.stack(segment_tokens),
            memory=state,
        )
        if labels is not None:
            total = count.sum()
            output.loss = loss_sum.sum() / total.clamp(min=1)
            output.predictions = predictions_out
            output.sample_loss = loss_sum / count.to(loss_sum.dtype)  # 0/0 -> NaN: no labels
        return output

    @staticmethod
    def _advance(state: torch.Tensor, step: SegmentStep, new_memory: torch.Tensor) -> torch.Tensor:
        """The batch's memory after `step`: samples not in the step keep theirs (out of place, so
        autograd sees every version)."""
        if step.rows is None:
            return new_memory
        return state.index_copy(0, step.rows, new_memory.to(state.dtype))

    @staticmethod
    def _place(out: torch.Tensor | None, values: torch.Tensor, step: SegmentStep,
               input_ids: torch.Tensor, fill: int) -> torch.Tensor:
        """Put one step's values (b, l, ...) back at their input positions in (B, T, ...)."""
        batch, total = input_ids.shape
        if out is None:
            out = values.new_full((batch, total, *values.shape[2:]), fill)
        if step.source is None:
            out[:, step.start : step.start + values.shape[1]] = values
            return out
        keep = step.source >= 0
        out.view(batch * total, *values.shape[2:])[step.source[keep]] = values[keep]
        return out

    @torch.no_grad()
    def read_context(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     progress: Callable[[int], None] | None = None, memory: torch.Tensor | None = None,
                     read_last: bool = False) -> tuple[torch.Tensor, SegmentStep | None]:
        """Process every segment but the last into memory, without gradients.

        Memory stays (B, M, D) however long the input: this is what makes 1M-token inference
        run in constant memory.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T), 1 on real tokens.
            progress: Called after each segment with the number of real tokens it read (for
                progress bars and tokens/s).
            memory: (B, M, D) memory to start from (a memory state) instead of the initial one.
            read_last: Read the last segment into memory too (then no step is returned).

        Returns:
            `(memory (B, M, D), last step)`; the last step is None with `read_last`.
        """
        plan = SegmentPlan(input_ids, attention_mask, None, self.config.segment_size)
        state = self.initial_memory(input_ids.shape[0]) if memory is None else memory
        last = None
        for step in plan:
            if step.index == len(plan) - 1 and not read_last:
                last = step
                break
            memory_in = state if step.rows is None else state.index_select(0, step.rows)
            _, new_memory = self.cell(memory_in, step.input_ids, step.token_mask)
            state = self._advance(state, step, new_memory)
            if progress is not None:
                progress(step.input_ids.numel() if step.token_mask is None else int(step.token_mask.sum()))
        return state, last

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 16, progress: Callable[[int], None] | None = None,
                 **generate_kwargs) -> torch.Tensor:
        """Read the input segment by segment, then generate after its last segment.

        The last segment is read as `[memory | tokens]` and decoding continues from it with the
        base model's own `generate` (greedy unless `generate_kwargs` say otherwise).

        Returns:
            (B, n) new token ids only; finished rows are padded with the pad (or eos) id.
        """
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        memory, last = self.read_context(input_ids, attention_mask, progress)
        return self.generate_after(memory, last.input_ids, last.token_mask, max_new_tokens, progress,
                                   **generate_kwargs)

    @torch.no_grad()
    def generate_after(self, memory: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor | None,
                       max_new_tokens: int = 16, progress: Callable[[int], None] | None = None,
                       **generate_kwargs) -> torch.Tensor:
        """Generate after one last segment `input_ids` (b, l) (left-padded, `token_mask` 1 on real
        tokens or None) read as `[memory | tokens]` from `memory` (b, M, D)."""
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        lm = self.cell.causal_lm
        limit = max_positions(lm.config)
        needed = self.cell.prefix + input_ids.shape[1] + max_new_tokens
        if limit is not None and needed > limit:
            raise ConfigError(
                f"generation needs {needed} positions (memory + last segment + max_new_tokens) but "
                f"the base allows {limit}; lower max_new_tokens or segment_size"
            )
        inputs_embeds, mask, _ = self.cell.embed(memory, input_ids, token_mask, write=False)
        if mask is None:
            mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        generation = dict(do_sample=False, max_new_tokens=max_new_tokens)
        generation["pad_token_id"] = pad_token_id(lm=lm)
        generation.update(generate_kwargs)
        # Given only inputs_embeds, transformers returns the new tokens alone.
        new_tokens = lm.generate(inputs_embeds=inputs_embeds, attention_mask=mask, **generation)
        if progress is not None:
            progress(int(mask[:, self.cell.prefix :].sum()))
        return new_tokens

    def initial_state(self) -> MemoryState:
        """The memory state of having read nothing (see `memory_state.py` for what a state is)."""
        return memory_state.initial_state(self)

    def read(self, input_ids: Sequence[torch.Tensor], states: Sequence[MemoryState] | None = None,
             progress: Callable[[int], None] | None = None) -> list[MemoryState]:
        """Read documents (1-D id tensors) into memory states, continuing `states` if given.

        Reading a document in pieces gives exactly the state of reading it whole.
        """
        return memory_state.read_into_states(self, input_ids, states, progress)

    def generate_from_states(self, states: Sequence[MemoryState], prompt_ids: Sequence[torch.Tensor],
                             max_new_tokens: int = 16, progress: Callable[[int], None] | None = None,
                             **generate_kwargs) -> torch.Tensor:
        """Generate after each state's document followed by its prompt: row i equals
        `generate(document_i + prompt_i)`. Repeat a state to ask it several questions at once.

        Returns:
            (B, n) new token ids, as `generate` returns them.
        """
        return memory_state.generate_from_states(self, states, prompt_ids, max_new_tokens, progress,
                                                 **generate_kwargs)

    def save_pretrained(self, path, **kwargs) -> None:
        """Write the RMT config and memory (and the PEFT adapter, if the base has one); `kwargs`
        as in `rmt_scale.model.saving.write_adapter`."""
        write_adapter(path, self.config, self.memory, self.base, **kwargs)

    @classmethod
    def from_pretrained(cls, path, base: nn.Module | None = None, **kwargs) -> RecurrentMemoryModel:
        """Load what `save_pretrained` wrote onto `base` (loaded from the recorded path if None);
        `kwargs` as in `rmt_scale.model.saving.read_adapter`."""
        saved = read_adapter(path, base, **kwargs)
        model = cls.wrap(saved.base, saved.config)
        with torch.no_grad():
            model.memory.copy_(saved.memory.to(model.memory.dtype))
        return model
