"""Reading text files with errors that name the file (and the line) and say what is wrong."""

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
