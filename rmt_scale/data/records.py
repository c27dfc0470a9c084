"""The first cached step of the user-data builders: checked text records written by ``datasets``.

``Dataset.from_generator`` runs a generator over the sources once and keeps the result under an
explicit fingerprint (see :mod:`rmt_scale.data.caching`); a second run with the same inputs reads
the Arrow files. What it reports as its own errors is turned back into the user's DataError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rmt_scale.data.sources import Source
from rmt_scale.errors import DataError


def records_dataset(
    generator: Callable[..., Iterator[dict]], features: Any, gen_kwargs: dict[str, Any],
    fingerprint: str, cache_dir: str | Path | None, sources: Sequence[Source], what: str,
) -> Any:
    """``Dataset.from_generator`` for records read from ``sources``, cached under ``fingerprint``.

    Raises:
        DataError: The generator's own DataError (not wrapped by ``datasets``), or one saying that
            the sources hold no ``what``.
    """
    import datasets

    try:
        return datasets.Dataset.from_generator(
            generator, features=features, gen_kwargs=gen_kwargs, fingerprint=fingerprint,
            cache_dir=None if cache_dir is None else str(cache_dir))
    except datasets.exceptions.DatasetGenerationError as err:
        raise_data_error(err)
        raise
    except ValueError as err:
        # What `datasets` raises when a generator yields nothing.
        if "corresponds to no data" not in str(err):
            raise
        raise DataError(f"{', '.join(s.path for s in sources)}: no {what}") from None


def raise_data_error(err: BaseException) -> None:
    """Raise the DataError that ``datasets`` wrapped while running one of our generators, if any.

    ``Dataset.from_generator`` reports any exception as DatasetGenerationError; the user should
    see the one-line DataError about their file instead.
    """
    cause = err.__cause__
    while cause is not None:
        if isinstance(cause, DataError):
            raise DataError(str(cause)) from None
        cause = cause.__cause__
