"""Reading text files with errors that name the file (and the line) and say what is wrong."""

import codecs
from pathlib import Path

from rmt_scale.errors import DataError


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file.

    Raises:
        DataError: The file cannot be read, or has bytes that are not UTF-8 (naming the line).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read this file ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{lineno}: bytes that are not UTF-8 at offset {err.start}") from None


def check_text_file(path: str | Path, chunk_size: int = 1 << 20) -> None:
    """Check, without holding it in memory, that `path` is non-empty UTF-8 text: what a command
    checks before it loads a model, so that a wrong file fails in a second, not after the load.

    Raises:
        DataError: The file cannot be read, is empty, holds NUL bytes (a binary file) or bytes that
            are not UTF-8 (naming the line).
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines, has_text = 0, 1, False
    try:
        with Path(path).open("rb") as handle:
            while chunk := handle.read(chunk_size):
                if b"\0" in chunk:
                    raise DataError(f"{path}: a binary file (NUL bytes), not text; pass a UTF-8 text file")
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    line = lines + chunk.count(b"\n", 0, max(err.start, 0))
                    raise DataError(f"{path}:{line}: bytes that are not UTF-8 at offset "
                                    f"{offset + max(err.start, 0)}; convert the file to UTF-8") from None
                has_text = has_text or bool(text.strip())
                lines += chunk.count(b"\n")
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path}: ends inside a UTF-8 character (truncated?); convert the file to UTF-8") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read this file ({err.strerror or err})") from None
    if not has_text:
        raise DataError(f"{path}: empty (no text); pass a file with text in it")
