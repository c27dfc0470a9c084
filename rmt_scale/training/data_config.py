"""The `data` section of the training config: the task and how many samples of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from rmt_scale.training.config_file import check as _check


@dataclass
class SyntheticDataConfig:
    """The built-in key-recall task (rmt_scale.data.synthetic.KeyRecallDataset).

    Attributes:
        key_length: Tokens in the key to recall.
        key_vocab: Keys are drawn from this many ids; chance accuracy is 1 / key_vocab.
    """

    key_length: int = 2
    key_vocab: int = 8


@dataclass
class BabilongDataConfig:
    """BABILong samples: a bAbI task hidden in noise text, built by rmt_scale.data.

    Attributes:
        task: bAbI task, "qa1" .. "qa20".
        tokenizer: Tokenizer directory; None uses `model.path`.
        babi_dir: Directory of the bAbI files; None uses the data module's default.
        noise_files: Text files used as noise; None uses the data module's default.
        hf_name: Hub dataset with the babi_qa schema, used when babi_dir is None (and cached
            locally); None with no babi_dir uses the built-in generator (qa1-qa3).
        split: bAbI split of the training samples.
        valid_split: bAbI split of the validation samples.
    """

    task: str = "qa1"
    tokenizer: str | None = None
    babi_dir: str | None = None
    noise_files: list[str] | None = None
    hf_name: str | None = None
    split: str = "train"
    valid_split: str = "validation"


@dataclass
class DataConfig:
    """Training data. A sample of a stage with n segments has n * rmt.segment_size tokens.

    Attributes:
        kind: "synthetic" (built-in key recall) or "babilong".
        num_samples: Training samples per length; the order is reshuffled every epoch.
        valid_samples: Validation samples per length (for evaluation and early advance).
        seed: Seed of the samples themselves; None uses the run seed.
        synthetic: Settings of the synthetic task.
        babilong: Settings of the BABILong task.
    """

    kind: str = "synthetic"
    num_samples: int = 1024
    valid_samples: int = 64
    seed: int | None = None
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    babilong: BabilongDataConfig = field(default_factory=BabilongDataConfig)

    def __post_init__(self) -> None:
        _check(self.kind in ("synthetic", "babilong"),
               f"data.kind must be 'synthetic' or 'babilong', got {self.kind!r}")
        _check(self.num_samples > 0, f"data.num_samples must be positive, got {self.num_samples}")
        _check(self.valid_samples >= 0, f"data.valid_samples must be >= 0, got {self.valid_samples}")
