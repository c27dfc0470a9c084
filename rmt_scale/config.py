"""RMTConfig: the settings of the recurrent memory wrapper.

The training run's own configuration (data, curriculum, optimizer, DeepSpeed) lives in
`rmt_scale.training.config`; this module holds only what the memory-augmented model needs, because a
saved adapter carries it and inference needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rmt_scale.errors import ConfigError

# Written-memory scalings: None keeps the reference RMT update (see RMTConfig.memory_norm).
MEMORY_NORMS = (None, "embedding", "soft_token")
# What the write positions read as input: "read" keeps the reference RMT (see RMTConfig.write_inputs).
WRITE_INPUTS = ("read", "initial")


@dataclass
class RMTConfig:
    """Recurrent memory settings (the names follow the RMT papers' code).

    Attributes:
        num_mem_tokens: Memory slots M. Each segment is read as `[M memory | tokens | M memory]`;
            0 turns the memory off (the model then equals the base on one segment).
        segment_size: Tokens per segment S. The base model sees at most `2*M + S` positions, so
            this is bounded by the base's maximum positions.
        bptt_depth: Gradients flow back through at most this many memory transitions; `None`
            means through all of them (full backpropagation through the recurrence).
        segment_checkpointing: Recompute each segment in the backward pass (non-reentrant
            activation checkpointing), so activation memory does not grow with the number of
            segments. Results are identical; costs about one extra forward per segment.
        memory_init_std: Scale of the initial memory relative to the input embeddings' std
            (the reference RMT draws memory from N(0, std(embeddings))).
        memory_norm: How the written memory is scaled before the next segment reads it. `None`
            (default, the reference RMT): the write positions' last hidden state as it is. For a
            Llama-style base that state comes after the final norm, so memory enters the next
            segment at a scale set by that norm (entries ~1), far above the token embeddings'
            (~0.02 for a fresh model). `"embedding"`: rescale each written memory vector to the
            RMS of the initial memory (`memory_init_std` x the embeddings' std), so every segment
            reads memory at the scale tokens and the initial memory enter with. `"soft_token"`:
            pass each written vector through the LM head and write the embedding mixture its
            next-token distribution gives, softmax(logits) @ input embeddings. Memory is then
            always something the base reads as input (a token, or a blend of tokens), and a
            segment learns to write by predicting tokens, which a pretrained LM already does
            (see docs/results.md: SmolLM2 reads token embeddings from memory slots, not its raw
            hidden states).
        sink_token: A token id whose embedding goes first in every segment, before the read
            memory (`[sink | memory | tokens | memory]`). `None` (default, the reference RMT):
            nothing before the memory. A pretrained decoder turns what comes first into its
            attention sink: positions with huge activations that take much of the attention while
            their content is ignored. In the reference layout that is the memory (on SmolLM2 every
            fresh memory slot; see docs/results.md). Giving the model a real token to sink into
            (its BOS or EOS id) keeps the memory slots ordinary positions, at the tokens' scale.
            Used only with memory (`num_mem_tokens > 0`).
        write_inputs: What the write positions take as input. `"read"` (default, the reference
            RMT): a copy of the memory this segment read. `"initial"`: the learned initial memory
            in every segment, so the write slots are fixed learned queries that find what to keep
            by attending to the read memory and the segment. Under `memory_norm="soft_token"` a
            copy of the read memory makes each slot write the token that follows its own content
            (a slot holding "garden" predicts "." next), so the memory shifts every segment;
            fixed queries have no such drift.
        write_exclude_special: Only with `memory_norm="soft_token"`: leave the base's special
            tokens (its config's BOS, EOS, PAD and UNK ids) out of the write distribution. On
            SmolLM2 + LoRA trained on answers that end in EOS, every write slot otherwise
            collapses onto EOS (p > 0.97): a memory that says nothing, whose softmax passes no
            gradient (docs/results.md).
    """

    num_mem_tokens: int = 16
    segment_size: int = 512
    bptt_depth: int | None = None
    segment_checkpointing: bool = True
    memory_init_std: float = 1.0
    memory_norm: str | None = None
    sink_token: int | None = None
    write_inputs: str = "read"
    write_exclude_special: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_mem_tokens, bool) or not isinstance(self.num_mem_tokens, int):
            raise ConfigError(f"num_mem_tokens must be an integer, got {self.num_mem_tokens!r}")
        if self.num_mem_tokens < 0:
            raise ConfigError(
                f"num_mem_tokens must be >= 0 (0 disables memory), got {self.num_mem_tokens}"
            )
        if isinstance(self.segment_size, bool) or not isinstance(self.segment_size, int):
            raise ConfigError(f"segment_size must be an integer, got {self.segment_size!r}")
        if self.segment_size <= 0:
            raise ConfigError(f"segment_size must be a positive number of tokens, got {self.segment_size}")
        if self.bptt_depth is not None and (
            isinstance(self.bptt_depth, bool) or not isinstance(self.bptt_depth, int) or self.bptt_depth < 0
        ):
            raise ConfigError(
                f"bptt_depth must be None (full BPTT) or an integer >= 0, got {self.bptt_depth!r}"
            )
        if not isinstance(self.segment_checkpointing, bool):
            raise ConfigError(
                f"segment_checkpointing must be true or false, got {self.segment_checkpointing!r}"
            )
        if not self.memory_init_std > 0:
            raise ConfigError(f"memory_init_std must be > 0, got {self.memory_init_std!r}")
        if self.memory_norm not in MEMORY_NORMS:
            raise ConfigError(
                f"memory_norm must be one of {list(MEMORY_NORMS)} (null: the reference RMT), "
                f"got {self.memory_norm!r}"
            )

        if self.sink_token is not None and (
            isinstance(self.sink_token, bool) or not isinstance(self.sink_token, int) or self.sink_token < 0
        ):
            raise ConfigError(
                f"sink_token must be null (the reference RMT) or a token id >= 0 (e.g. the base's BOS "
                f"or EOS id), got {self.sink_token!r}"
            )

        if self.write_inputs not in WRITE_INPUTS:
            raise ConfigError(
                f"write_inputs must be one of {list(WRITE_INPUTS)} (read: the reference RMT), "
                f"got {self.write_inputs!r}"
            )
        if not isinstance(self.write_exclude_special, bool):
            raise ConfigError(
                f"write_exclude_special must be true or false, got {self.write_exclude_special!r}"
            )
        if self.write_exclude_special and self.memory_norm != "soft_token":
            raise ConfigError(
                "write_exclude_special applies to memory_norm: soft_token only; set memory_norm: "
                f"soft_token or drop write_exclude_special (memory_norm is {self.memory_norm!r})"
            )

    def sink_positions(self) -> int:
        """1 when a sink token goes before the memory (`sink_token` set and memory on), else 0."""
        return int(self.sink_token is not None and self.num_mem_tokens > 0)

    def positions_per_segment(self) -> int:
        """Positions one training segment occupies in the base model: `2*M + S` (+1 with a sink)."""
        return 2 * self.num_mem_tokens + self.segment_size + self.sink_positions()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RMTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown RMT config keys {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RMTConfig:
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ConfigError(f"{path}: RMT config file not found") from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err}); re-export the adapter") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object of RMT settings")
        try:
            return cls.from_dict(values)
        except ConfigError as err:  # name the file: an adapter's settings, edited or damaged
            raise ConfigError(f"{path}: {err}") from None
