"""The project's exceptions: one base, `RMTScaleError`, that every entry point catches.

A user error (a bad config, file, checkpoint or argument) raises a subclass with a one-line message
that names the problem and what to do; the command line prints `error: <message>` and exits with
status 2. Anything else is a bug and keeps its traceback. The subclasses also derive from
ValueError where earlier releases raised a ValueError, so library callers that catch it still do.
"""


class RMTScaleError(Exception):
    """Base of every error a user can fix; the message is one line."""


class ConfigError(RMTScaleError, ValueError):
    """A configuration value that cannot work; the message names the key and what to do."""


class UnsupportedModelError(RMTScaleError, ValueError):
    """The base model cannot carry recurrent memory; the message says why and what to use."""


class DataError(RMTScaleError, ValueError):
    """Input data that cannot be used: a malformed file, a missing task file, a bad length.

    The message names the file and line number where there is one.
    """


class AdapterError(RMTScaleError, ValueError):
    """An adapter directory (what `save_pretrained` / `rmt-scale export` write) that is missing,
    partial, corrupt or does not fit the base model."""


class CheckpointError(RMTScaleError, ValueError):
    """A training checkpoint that is missing, partial, corrupt or unsafe to load."""


class GGUFError(RMTScaleError, ValueError):
    """A GGUF file that is missing, truncated, corrupt or of an unsupported architecture."""


class InputError(RMTScaleError, ValueError):
    """A command-line argument or input file that cannot be used (missing file, bad value)."""


class MemoryStateError(RMTScaleError, ValueError):
    """A memory state (what reading a document leaves) that is corrupt, truncated, or was read by
    another adapter, base, dtype, tokenizer or RMT config than the model it is used with."""


class TrainingError(RMTScaleError):
    """Training that must not go on, such as a non-finite loss; the message says what to change."""


class DistributedError(RMTScaleError):
    """The distributed runtime cannot go on: another rank stopped answering (past
    dist_timeout_minutes) or exited during a collective, or DeepSpeed would wait forever (a dead
    build's lock on an extension it compiles).

    Printed by every rank that sees it, not only rank 0: the rank that stopped may be rank 0.
    """


class RankZeroError(RMTScaleError):
    """An error raised on rank 0 and handed to every rank, so that all of them stop.

    Attributes:
        kind: The class name of the original error.
    """

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message, or its class name when it has none: a library's
    multi-line message quoted inside a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
