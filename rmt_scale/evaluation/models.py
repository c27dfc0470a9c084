"""What an evaluation runs: a memory model, or a plain base checkpoint as the full-attention baseline.

`--model PATH` is either

* a saved memory model / exported adapter (has `rmt_config.json`): generation reads the whole
  input segment by segment into memory, however long;
* a base checkpoint (has `config.json` only): the full-attention baseline, which keeps the last
  `max_positions - max_new_tokens` tokens of the prompt (the question is at the end) and calls the
  base's own `generate`; or, with `num_mem_tokens`, the base wrapped with fresh, untrained memory
  (the control a trained adapter should beat). A base may be named by its Hugging Face id when
  it is in the local cache (loaded offline, remote code off).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rmt_scale.config import RMTConfig
from rmt_scale.errors import AdapterError, ConfigError
from rmt_scale.model.loading import (
    load_causal_lm,
    load_tokenizer,
    model_id_of,
    pad_token_id,
    parse_device,
    parse_dtype,
    resolve_model_dir,
)
from rmt_scale.model.memory import max_positions, unwrap_causal_lm, validate_base
from rmt_scale.model.recurrent import RecurrentMemoryModel
from rmt_scale.model.saving import RMT_CONFIG_FILE, read_rmt_config, recorded_base_path
from rmt_scale.model.segments import SegmentPlan

logger = logging.getLogger(__name__)


@dataclass
class EvalModel:
    """A loaded model ready to answer, and the tokenizer of its base.

    Attributes:
        model: A RecurrentMemoryModel, or the causal LM itself for the full-attention baseline.
        tokenizer: The base model's tokenizer.
        path: The `--model` directory.
        kind: "memory" (a saved memory model), "untrained-memory" (a base wrapped with fresh
            memory) or "full-attention" (the base alone).
        base_path: Where the base checkpoint was loaded from.
        carry_memory: False for the no-carry control: every answer is generated from the last
            segment and the initial memory, as if nothing before it had been written (a memory
            model that scores the same either way does not use its memory).
    """

    model: nn.Module
    tokenizer: Any
    path: str
    kind: str
    base_path: str
    carry_memory: bool = True

    @property
    def has_memory(self) -> bool:
        return isinstance(self.model, RecurrentMemoryModel)

    @property
    def causal_lm(self) -> nn.Module:
        return self.model.cell.causal_lm if self.has_memory else unwrap_causal_lm(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def max_positions(self) -> int | None:
        return max_positions(self.causal_lm.config)

    def tokens_read(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """How many of a prompt's tokens the model sees: all with memory, the last ones without."""
        limit = self.max_positions()
        if self.has_memory or limit is None:
            return prompt_tokens
        return min(prompt_tokens, limit - max_new_tokens)

    def describe(self) -> dict:
        """What ran, for results files."""
        return {
            "path": self.path,
            "kind": self.kind,
            "base": self.base_path,
            "architecture": type(self.causal_lm).__name__,
            "max_positions": self.max_positions(),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "rmt_config": self.model.config.to_dict() if self.has_memory else None,
            "carry_memory": self.carry_memory,
        }

    def label(self) -> str:
        """A short name for plot titles."""
        name = Path(self.path).name or self.path
        if self.kind == "full-attention":
            return f"{name} (full attention, {self.max_positions()} positions)"
        config = self.model.config
        untrained = ", untrained memory" if self.kind == "untrained-memory" else ""
        control = ", memory not carried" if not self.carry_memory else ""
        return f"{name} (RMT M={config.num_mem_tokens}, S={config.segment_size}{untrained}{control})"


def load_eval_model(path: str | Path, base: str | None = None, num_mem_tokens: int | None = None,
                    segment_size: int | None = None, device: str | None = None,
                    dtype: str | None = None, trust_remote_code: bool = False) -> EvalModel:
    """Load `path` for evaluation (see the module docstring for what it may be).

    Args:
        path: A saved memory-model directory, a base checkpoint directory, or a base's model
            id in the local Hugging Face cache.
        base: Base checkpoint for a memory model, instead of the path it records.
        num_mem_tokens: For a base checkpoint: wrap it with this much fresh memory. For a memory
            model it is fixed by the saved memory; only an equal value is accepted.
        segment_size: Override the saved segment size (memory models, or a base with memory).
        device: "auto" (CUDA if available), "cpu", "cuda" or "cuda:N".
        dtype: "float32", "bfloat16" or "float16"; default: the checkpoint's own.
        trust_remote_code: Run Python code shipped in the base checkpoint (an architecture
            transformers does not know); only on the user's explicit request.

    Raises:
        AdapterError: For a missing or unrecognised directory, or no tokenizer.
        ConfigError: For overrides that do not fit.
        InputError: For a device this machine does not have.
    """
    name = str(path)
    # A directory, or the id of a model in the local cache (a base: the baseline or fresh memory).
    path = resolve_model_dir(path)
    target = parse_device(device)
    torch_dtype = parse_dtype(dtype)
    load_kwargs = {"trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        load_kwargs["dtype"] = torch_dtype
    if (path / RMT_CONFIG_FILE).is_file():
        # Overrides are checked against the saved config before any weights are loaded.
        saved = read_rmt_config(path)
        if num_mem_tokens is not None and num_mem_tokens != saved.num_mem_tokens:
            raise ConfigError(
                f"{path} was trained with num_mem_tokens={saved.num_mem_tokens} and its memory "
                f"has that shape; drop --num-mem-tokens"
            )
        config = saved if segment_size is None else replace(saved, segment_size=segment_size)
        model = RecurrentMemoryModel.from_pretrained(path, base_model_name_or_path=base, **load_kwargs)
        validate_base(model.base, config)
        model.config = config
        kind = "memory"
        base_path = base or recorded_base_path(path) or ""
    elif (path / "config.json").is_file():
        if base is not None:
            raise ConfigError(f"{path} is a base checkpoint itself; --base applies to memory models")
        if segment_size is not None and not num_mem_tokens:
            raise ConfigError("--segment-size needs memory: give --num-mem-tokens too, or a memory model")
        config = None
        if num_mem_tokens:
            config = RMTConfig(num_mem_tokens=num_mem_tokens,
                               **({} if segment_size is None else {"segment_size": segment_size}))
        lm = load_causal_lm(path, **load_kwargs)
        base_path = name if model_id_of(name) else str(path)
        if config is not None:
            model, kind = RecurrentMemoryModel.wrap(lm, config), "untrained-memory"
        else:
            model, kind = lm, "full-attention"
    else:
        raise AdapterError(
            f"{path}: neither a memory model (no {RMT_CONFIG_FILE}) nor a base checkpoint "
            "(no config.json)"
        )
    tokenizer = load_tokenizer(path, base_path or None, trust_remote_code=trust_remote_code)
    model.to(target).eval()
    return EvalModel(model, tokenizer, name, kind, base_path)


@contextmanager
def segment_hook(model: RecurrentMemoryModel, callback: Callable[[int], None]) -> Iterator[None]:
    """Call `callback(real tokens)` after every segment the memory cell processes.

    A forward hook on the cell sees each segment read into memory, without changing the model.
    """
    def hook(module, args, kwargs, output):
        # MemoryCell.forward(memory, input_ids, token_mask=None), positional or by keyword.
        named = dict(zip(("memory", "input_ids", "token_mask"), args)) | kwargs
        token_mask = named.get("token_mask")
        callback(int(token_mask.sum()) if token_mask is not None else named["input_ids"].numel())

    handle = model.cell.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def generate_answers(eval_model: EvalModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     max_new_tokens: int, on_tokens: Callable[[int], None] | None = None
                     ) -> torch.Tensor:
    """Greedy answers to a LEFT-padded batch of prompts; (B, n) new token ids.

    With memory, the whole prompt is read segment by segment (`on_tokens` is told each segment's
    tokens as it goes). Without, only the last `max_positions - max_new_tokens` tokens are kept
    (the question is at the end), as a full-attention model with that context would see them.
    """
    model, device = eval_model.model, eval_model.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    if eval_model.has_memory and not eval_model.carry_memory:
        # The control: only the last segment (where the question is), read with the initial memory.
        plan = SegmentPlan(input_ids, attention_mask, None, model.config.segment_size)
        last = plan.step(len(plan) - 1)
        new = model.generate_after(model.initial_memory(input_ids.shape[0]), last.input_ids,
                                   last.token_mask, max_new_tokens)
        if on_tokens is not None:
            on_tokens(int(attention_mask.sum()))
        return new
    if eval_model.has_memory:
        if on_tokens is None:
            return model.generate(input_ids, attention_mask, max_new_tokens=max_new_tokens)
        seen = []
        with segment_hook(model, lambda n: (seen.append(n), on_tokens(n))):
            new = model.generate(input_ids, attention_mask, max_new_tokens=max_new_tokens)
        on_tokens(int(attention_mask.sum()) - sum(seen))  # the last segment, read by generate
        return new
    limit = eval_model.max_positions()
    if limit is not None and input_ids.shape[1] > limit - max_new_tokens:
        keep = limit - max_new_tokens
        if keep <= 0:
            raise ConfigError(f"max_new_tokens={max_new_tokens} leaves no room in {limit} positions")
        input_ids, attention_mask = input_ids[:, -keep:], attention_mask[:, -keep:]
    lm = eval_model.causal_lm
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                            max_new_tokens=max_new_tokens,
                            pad_token_id=pad_token_id(eval_model.tokenizer, lm))
    if on_tokens is not None:
        on_tokens(int(attention_mask.sum()))
    return output[:, input_ids.shape[1]:]
