"""The `data` section of the training config: the task and how many samples of it.

Four kinds: the built-in `synthetic` key recall and `babilong` generator, and the user's own data,
`text` (long documents, loss on every token) and `qa` (long-context QA, loss on the answer only),
read by rmt_scale.data (docs/your-data.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from rmt_scale.errors import ConfigError, DataError
from rmt_scale.training.config_file import check as _check

KINDS = ("synthetic", "babilong", "text", "qa")
PRESETS = ("babilong",)


def _check_with(key: str, call: Callable[[], object]) -> None:
    """Run a check of the data layer; its DataError becomes a ConfigError naming `key`."""
    try:
        call()
    except DataError as err:
        raise ConfigError(f"{key}: {err}") from None


def _check_sources(key: str, sources: list[str] | None) -> None:
    _check(sources is None or all(isinstance(s, str) and s.strip() for s in sources),
           f"{key} must be a list of files, directories, globs or dataset names, got {sources!r}")


@dataclass
class TextDataConfig:
    """Long documents for language modelling (`data.kind: text`): a stage with n segments trains on
    windows of n * rmt.segment_size tokens cut from one document each, loss on every token.

    Attributes:
        sources: Files (.txt/.md: one document each; .jsonl/.json/.parquet: one per row),
            directories (a `save_to_disk` dataset, else every such file in them), globs, or
            dataset names in the local Hugging Face cache (`org/name[:config[:split]]`).
            Relative paths are read from the working directory.
        field: The text field of .jsonl/.json/.parquet rows and datasets.
        short_documents: Documents shorter than a stage's window: "skip" (they train at shorter
            stages only; the plan counts them) or "pack" (joined, EOS between two, into windows).
        strip_license: Remove a Project Gutenberg header and licence when present.
    """

    sources: list[str] = dataclasses.field(default_factory=list)
    field: str = "text"
    short_documents: str = "skip"
    strip_license: bool = True

    def __post_init__(self) -> None:
        from rmt_scale.data import SHORT_DOCUMENT_POLICIES

        _check_sources("data.text.sources", self.sources)
        _check(bool(self.field), "data.text.field must name the text field of your rows")
        _check(self.short_documents in SHORT_DOCUMENT_POLICIES,
               f"data.text.short_documents must be one of {list(SHORT_DOCUMENT_POLICIES)}, "
               f"got {self.short_documents!r}")


@dataclass
class QADataConfig:
    """Long-context QA rows (`data.kind: qa`): a stage with n segments trains on the samples that
    fit n segments (rmt_scale.data.stage_samples), loss on the answer tokens only.

    Attributes:
        sources: Files (.jsonl/.json/.parquet), directories, globs or dataset names in the local
            Hugging Face cache, as for data.text.sources; with `preset: babilong`, directories in
            the official BABILong layout or its dataset names (RMT-team/babilong-train-5k-samples).
        fields: Your field names, e.g. {context: document, answer: target}; keys: context,
            question, answer, messages (a chat whose last turn is the answer), task. Unnamed ones
            keep their default name (the key itself).
        template: "plain" (`{context}\\nQuestion: {question}\\nAnswer:`), "babilong" (the
            official BABILong prompt), "chat" (the tokenizer's chat template) or a pattern with
            {question} (and {context}). None: "babilong" with the preset, else "plain".
        task: A BABILong task ("qa1" .. "qa20") for rows without a task field: picks the
            instruction of the babilong template. With `preset: babilong`: the task to read.
        preset: None, or "babilong": the official BABILong data (fields input, question, target;
            one config per length, one split per task) read for `task` at `lengths`.
        lengths: With `preset: babilong`: the lengths (configs) to read, e.g. [0k, 1k, 2k].
        long_samples: Samples longer than the last stage: "skip" (counted in the plan),
            "truncate" (cut the context from its start; question and answer stay whole) or
            "error" (stop, naming the first one's file:row).
    """

    sources: list[str] = field(default_factory=list)
    fields: dict[str, str] | None = None
    template: str | None = None
    task: str | None = None
    preset: str | None = None
    lengths: list[str] | None = None
    long_samples: str = "skip"

    def __post_init__(self) -> None:
        from rmt_scale.data import LONG_SAMPLE_POLICIES, get_template, parse_length
        from rmt_scale.data.babi import task_number
        from rmt_scale.data.qa import field_mapping

        _check_sources("data.qa.sources", self.sources)
        _check(self.fields is None or (isinstance(self.fields, dict) and all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.fields.items())),
            f"data.qa.fields must map field names to yours, e.g. {{context: document}}, got {self.fields!r}")
        _check_with("data.qa.fields", lambda: field_mapping(self.fields))
        if self.template is not None and self.template != "chat":
            # "chat" needs the tokenizer: checked when the data is read.
            _check_with("data.qa.template", lambda: get_template(self.template))
        if self.task is not None:
            _check_with("data.qa.task", lambda: task_number(self.task))
        _check(self.long_samples in LONG_SAMPLE_POLICIES,
               f"data.qa.long_samples must be one of {list(LONG_SAMPLE_POLICIES)}, got {self.long_samples!r}")
        _check(self.preset is None or self.preset in PRESETS,
               f"data.qa.preset must be null or one of {list(PRESETS)}, got {self.preset!r}")
        if self.preset == "babilong":
            _check(self.task is not None, "data.qa.preset=babilong needs data.qa.task (qa1 .. qa20)")
            _check(bool(self.lengths), "data.qa.preset=babilong needs data.qa.lengths, e.g. [0k, 1k, 2k]")
            _check(self.fields is None, "data.qa.fields: the babilong preset reads the official fields "
                                        "(input, question, target); remove data.qa.fields")
            for length in self.lengths:
                _check_with("data.qa.lengths", lambda length=length: parse_length(length))
        else:
            _check(self.lengths is None, "data.qa.lengths is read only with data.qa.preset=babilong")

    def template_name(self) -> str:
        """The template used: the given one, else the preset's (babilong) or plain."""
        if self.template is not None:
            return self.template
        return "babilong" if self.preset == "babilong" else "plain"


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
        facts_before_last_segment: Place every fact at least rmt.segment_size prompt tokens
            before the question (training and validation samples), so that no fact shares the
            last segment with the question and every answer has to come through the memory.
            Evaluation (`rmt-scale eval`) is unchanged: facts anywhere, as in BABILong.
        ask_every_person: qa1 only: after the answer, training and validation samples also ask
            where every other person of the story is, with a loss on those answers, so that
            the memory has to keep each person's place, not only the latest move. Validation
            loss and accuracy then cover every answer; `rmt-scale eval` is unchanged (one
            question, as in BABILong).
    """

    task: str = "qa1"
    tokenizer: str | None = None
    babi_dir: str | None = None
    noise_files: list[str] | None = None
    hf_name: str | None = None
    split: str = "train"
    valid_split: str = "validation"
    facts_before_last_segment: bool = False
    ask_every_person: bool = False

    def __post_init__(self) -> None:
        _check(not self.ask_every_person or self.task == "qa1",
               f"data.babilong.ask_every_person is for task qa1, not {self.task}: turn it off")


@dataclass
class DataConfig:
    """Training data. A sample of a stage with n segments has about n * rmt.segment_size tokens.

    Attributes:
        kind: "synthetic" (built-in key recall), "babilong" (built-in generator), "text" (your
            long documents) or "qa" (your long-context QA).
        num_samples: Training samples per length (synthetic, babilong); text and qa train on all
            their windows or samples. The order is reshuffled every epoch.
        valid_samples: Validation samples per length (for evaluation and early advance); for text
            and qa at most this many of the validation windows or samples; 0 turns validation off.
        seed: Seed of the samples themselves; None uses the run seed.
        tokenizer: Tokenizer of text and qa data: a directory or a model id in the local Hugging
            Face cache; None uses model.path's (a random base needs one here).
        valid_sources: Separate validation data (text, qa), read like the training sources.
        valid_fraction: Without valid_sources: hold out this fraction of the documents (text) or
            contexts (qa) for validation, chosen with a fixed seed (0) so that every run, whatever
            its seed, validates on the same texts; 0 means no validation.
        synthetic: Settings of the synthetic task.
        babilong: Settings of the BABILong task.
        text: Settings of kind text.
        qa: Settings of kind qa.
    """

    kind: str = "synthetic"
    num_samples: int = 1024
    valid_samples: int = 64
    seed: int | None = None
    tokenizer: str | None = None
    valid_sources: list[str] | None = None
    valid_fraction: float = 0.0
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    babilong: BabilongDataConfig = field(default_factory=BabilongDataConfig)
    text: TextDataConfig = field(default_factory=TextDataConfig)
    qa: QADataConfig = field(default_factory=QADataConfig)

    def __post_init__(self) -> None:
        _check(self.kind in KINDS, f"data.kind must be one of {list(KINDS)}, got {self.kind!r}")
        _check(self.num_samples > 0, f"data.num_samples must be positive, got {self.num_samples}")
        _check(self.valid_samples >= 0, f"data.valid_samples must be >= 0, got {self.valid_samples}")
        _check(self.seed is None or 0 <= self.seed < 2**63,
               f"data.seed must be between 0 and 2**63-1, got {self.seed}")
        _check(0.0 <= self.valid_fraction < 1.0,
               f"data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        _check_sources("data.valid_sources", self.valid_sources)
        user = self.kind in ("text", "qa")
        if not user:
            _check(self.valid_sources is None and self.valid_fraction == 0.0,
                   f"data.valid_sources and data.valid_fraction are for kind text or qa; kind "
                   f"{self.kind} makes its own validation samples")
            return
        _check(bool(self.user_sources()),
               f"data.kind={self.kind} needs data.{self.kind}.sources: files, directories, globs "
               "or dataset names in the local Hugging Face cache")
        _check(not (self.valid_sources and self.valid_fraction),
               "give data.valid_sources or data.valid_fraction, not both")

    def user_sources(self) -> list[str]:
        """The training sources of kind text or qa."""
        return list(self.text.sources if self.kind == "text" else self.qa.sources)

    def has_validation(self) -> bool:
        """Whether the run has validation data (evaluation, early advance)."""
        if self.valid_samples == 0:
            return False
        return self.kind not in ("text", "qa") or bool(self.valid_sources) or self.valid_fraction > 0
