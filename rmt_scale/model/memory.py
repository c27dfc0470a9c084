"""The memory cell: one segment through the unchanged base model, with memory around it.

Token layout of one segment (M = num_mem_tokens, l = tokens in this step, p = left padding)::

    position ids:  0 .. M-1          (pad)     M .. M+l-p-1        M+l-p .. 2M+l-p-1
                 +-----------------+---------+-------------------+-------------------+
    embeddings   |  read memory    | padding |  segment tokens   |   write memory    |
                 |  (B, M, D)      | masked  |  (B, l-p, D)      |   (B, M, D)       |
                 +-----------------+---------+-------------------+-------------------+
    used for       read by the        --       token hidden ->     last hidden state
                   tokens                       LM head / loss      = next memory

The write copy comes after the tokens, so under causal attention it sees the read memory and the
whole segment while no token sees it: token logits do not depend on it, and its outputs become the
memory of the next segment. Position ids restart at 0 every segment, so the base never sees a
position beyond `2*M + S`; padding sits between the read memory and the tokens, which keeps the
real tokens' positions and attention exactly those of the same segment without padding.

With `RMTConfig.sink_token` set, one more position comes first: that token's embedding at
position 0, everything else shifted by one. A pretrained decoder makes what comes first its
attention sink (huge activations, content ignored); the sink token takes that role instead of the
memory slots.

The cell talks to the base through `get_input_embeddings()`, its backbone (decoder stack) and its
output embeddings. It calls the backbone and applies the LM head itself, only to the positions a
caller asks for, so memory positions never cost a (positions x vocab) projection. A PEFT model is
unwrapped with `get_base_model()`: LoRA layers live inside the modules, so they take part as usual.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from rmt_scale.config import RMTConfig
from rmt_scale.errors import ConfigError, UnsupportedModelError


def unwrap_causal_lm(base: nn.Module) -> nn.Module:
    """The transformers causal LM inside `base` (a PEFT model exposes it via get_base_model)."""
    get_base_model = getattr(base, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else base


def max_positions(model_config) -> int | None:
    """The largest number of positions the base model was built for, if it declares one."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def validate_base(base: nn.Module, config: RMTConfig) -> None:
    """Raise a one-line error if `base` cannot be wrapped with `config`."""
    lm = unwrap_causal_lm(base)
    model_config = getattr(lm, "config", None)
    name = type(lm).__name__
    if model_config is None or not hasattr(lm, "get_input_embeddings"):
        raise UnsupportedModelError(
            f"{name} is not a Hugging Face model; pass a transformers causal LM (AutoModelForCausalLM)"
        )
    if getattr(model_config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{name} is an encoder-decoder model; RMT needs a decoder-only causal LM "
            "(LLaMA, Mistral, Qwen2, GPT-2, ...)"
        )
    # Registered causal LMs, plus custom ones named by the transformers convention (remote code).
    causal = name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith(("ForCausalLM", "LMHeadModel"))
    if not causal or lm.get_output_embeddings() is None:
        raise UnsupportedModelError(
            f"{name} is not a causal language model (encoder-only or headless); load the checkpoint "
            "with AutoModelForCausalLM and use a decoder-only architecture"
        )
    if getattr(model_config, "model_type", "") in {"bert", "roberta", "xlm-roberta", "electra", "camembert"}:
        raise UnsupportedModelError(
            f"{name} is a bidirectional encoder used as a decoder; RMT needs a decoder-only causal LM"
        )
    backbone = lm.get_decoder()
    if "inputs_embeds" not in inspect.signature(backbone.forward).parameters:
        raise UnsupportedModelError(
            f"{name}'s forward takes no inputs_embeds, so memory embeddings cannot be fed in; "
            "use a model whose forward accepts inputs_embeds"
        )
    limit = max_positions(model_config)
    if limit is not None and config.positions_per_segment() > limit:
        sink = " + 1 (sink_token)" if config.sink_positions() else ""
        raise ConfigError(
            f"2*num_mem_tokens + segment_size{sink} = {config.positions_per_segment()} exceeds {name}'s "
            f"maximum of {limit} positions; lower segment_size or num_mem_tokens"
        )
    vocab = lm.get_input_embeddings().weight.shape[0]
    if config.sink_positions() and config.sink_token >= vocab:
        raise ConfigError(f"sink_token {config.sink_token} is not a token id of {name} (vocabulary of "
                          f"{vocab}); use its BOS or EOS id")


def special_token_ids(model_config) -> list[int]:
    """The BOS, EOS, PAD and UNK ids a transformers config declares (each may be a list), sorted."""
    ids = set()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(model_config, name, None)
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(token, int) and not isinstance(token, bool) and token >= 0:
                ids.add(token)
    return sorted(ids)


class MemoryCell(nn.Module):
    """Runs one segment `[read memory | tokens | write memory]` through the base model.

    Args:
        base: A transformers causal LM, or a PEFT model of one.
        config: The RMT settings (only `num_mem_tokens` and `memory_init_std` matter here).
    """

    def __init__(self, base: nn.Module, config: RMTConfig):
        super().__init__()
        validate_base(base, config)
        self.base = base
        self.num_mem_tokens = config.num_mem_tokens
        embeddings = base.get_input_embeddings().weight
        # The reference RMT draws the initial memory from N(0, std(embeddings)): memory starts at the
        # scale the first layer expects. A fixed generator keeps wrapping free of global RNG effects.
        with torch.no_grad():
            std = embeddings.float().std().item() * config.memory_init_std
            generator = torch.Generator().manual_seed(0)
            init = torch.randn(config.num_mem_tokens, embeddings.shape[-1], generator=generator) * std
        dtype = embeddings.dtype if embeddings.dtype.is_floating_point else torch.float32
        self.memory = nn.Parameter(init.to(device=embeddings.device, dtype=dtype))  # (M, D)
        self.memory_norm = config.memory_norm
        # Under memory_norm="embedding" each written memory vector is rescaled to this RMS, the
        # initial memory's at wrapping: every segment then reads memory at the scale the first does.
        self.write_rms = std
        # The sink token's id as a buffer: it follows the model to its device, and is not saved
        # (the config holds it).
        self.sink_token = config.sink_token if config.sink_positions() else None
        self.register_buffer("sink_ids", torch.tensor([[self.sink_token or 0]]), persistent=False)
        self.write_inputs = config.write_inputs
        # Token ids the soft-token write may not emit (a buffer, so it follows the model's device).
        excluded = special_token_ids(unwrap_causal_lm(base).config) if config.write_exclude_special else []
        self.register_buffer("write_excluded_ids", torch.tensor(excluded, dtype=torch.long), persistent=False)

    @property
    def prefix(self) -> int:
        """Positions before the segment tokens: the sink (0 or 1) and the read memory."""
        return (self.sink_token is not None) + self.num_mem_tokens

    @property
    def causal_lm(self) -> nn.Module:
        return unwrap_causal_lm(self.base)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for hidden states (..., D) -> (..., V)."""
        return self.causal_lm.get_output_embeddings()(hidden)

    def embed(self, memory: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor | None,
              write: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Build inputs_embeds, attention mask and position ids of one segment.

        Returns:
            `(inputs_embeds (b, M+l[+M], D), attention_mask (b, ...) or None, position_ids)`.
        """
        embedding = self.base.get_input_embeddings()
        token_embeds = embedding(input_ids)  # (b, l, D)
        memory = memory.to(token_embeds.dtype)
        # The write copy: the read memory (reference), or the learned initial memory as fixed queries.
        write_copy = memory if self.write_inputs == "read" else self.memory.to(token_embeds.dtype).expand_as(memory)
        parts = [memory, token_embeds, write_copy] if write else [memory, token_embeds]
        read = self.num_mem_tokens
        if self.sink_token is not None:
            parts.insert(0, embedding(self.sink_ids).expand(input_ids.shape[0], 1, -1))
            read += 1
        inputs_embeds = torch.cat(parts, dim=1) if self.num_mem_tokens else token_embeds
        batch, length = inputs_embeds.shape[:2]
        if token_mask is None:
            positions = torch.arange(length, device=inputs_embeds.device).expand(batch, length)
            return inputs_embeds, None, positions
        ones = token_mask.new_ones(batch, read)
        mask_parts = [ones, token_mask, ones[:, : self.num_mem_tokens]] if write else [ones, token_mask]
        attention_mask = torch.cat(mask_parts, dim=1)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return inputs_embeds, attention_mask, positions

    def forward(self, memory: torch.Tensor, input_ids: torch.Tensor,
                token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One segment.

        Args:
            memory: Memory read by this segment, (b, M, D).
            input_ids: Segment tokens, left-padded, (b, l).
            token_mask: 1 for real tokens, 0 for padding, (b, l); None when there is no padding.

        Returns:
            `(token_hidden (b, l, D), new_memory (b, M, D))`: last-layer hidden states of the
            segment tokens, and the memory the next segment reads (see `scale_written`).
        """
        token_hidden, write_hidden = self.hidden_states(memory, input_ids, token_mask)
        return token_hidden, self.scale_written(write_hidden)

    def hidden_states(self, memory: torch.Tensor, input_ids: torch.Tensor,
                      token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` up to the write: last-layer states of the segment tokens (b, l, D) and of
        the write positions (b, M, D), before `scale_written` turns the latter into memory."""
        inputs_embeds, attention_mask, positions = self.embed(memory, input_ids, token_mask, write=True)
        hidden = self.causal_lm.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
        ).last_hidden_state
        m, length = self.prefix, input_ids.shape[1]
        return hidden[:, m : m + length], hidden[:, m + length :]

    def write_distribution(self, memory: torch.Tensor) -> torch.Tensor:
        """The soft-token write's next-token distribution at each write position, (b, M, V) in
        fp32 (a 50k-way softmax in bf16 is coarse); excluded special tokens get probability 0."""
        logits = self.lm_head(memory).float()
        if self.write_excluded_ids.numel():
            logits = logits.index_fill(-1, self.write_excluded_ids, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def scale_written(self, memory: torch.Tensor) -> torch.Tensor:
        """The memory the next segment reads, from the write positions' last hidden state (b, M, D).

        Reference RMT (memory_norm=None): unchanged. "embedding": each memory vector rescaled to RMS
        `write_rms`; a post-final-norm state otherwise enters the next segment tens of times louder
        than the tokens (see RMTConfig.memory_norm and the extrapolation benchmark). "soft_token":
        the input embeddings mixed by each write position's next-token distribution.
        """
        if self.memory_norm is None:
            return memory
        if self.memory_norm == "soft_token":
            # The mixture in the embeddings' dtype, so the vocabulary-sized table is never copied. A convex
            # combination of embedding rows has the tokens' scale by construction.
            embeddings = self.base.get_input_embeddings().weight
            weights = self.write_distribution(memory).to(embeddings.dtype)
            return (weights @ embeddings).to(memory.dtype)
        rms = memory.float().pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()
        return (memory.float() * (self.write_rms / rms)).to(memory.dtype)
