"""The exception type of the data package, and reading text files with errors it can name."""

from pathlib import Path

from rmt_scale.errors import DataError


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file; undecodable bytes are a DataError naming the file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{lineno}: bytes that are not UTF-8 at offset {err.start}") from None
