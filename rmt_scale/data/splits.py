"""Held-out validation parts of user data, by whole documents or contexts."""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

from rmt_scale.errors import DataError


def holdout_split(
    keys: Sequence[Hashable], valid_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Indices of a train / validation split that holds out whole groups of equal keys.

    Rows with the same key (the same document, or QA rows on the same context) land in the same
    split, so validation never shares text with training. The choice depends only on the keys and
    ``seed``, not on the training seed.

    Raises:
        DataError: If ``valid_fraction`` is not in [0, 1) or there are fewer than two groups.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    groups = list(dict.fromkeys(keys))
    if valid_fraction == 0:
        return list(range(len(keys))), []
    if len(groups) < 2:
        raise DataError(f"cannot hold out a validation part of {len(groups)} document(s); give "
                        "separate validation sources instead")
    random.Random(seed).shuffle(groups)
    # At least one group held out, and at least one left to train on.
    held = set(groups[:min(len(groups) - 1, max(1, round(valid_fraction * len(groups))))])
    train = [i for i, key in enumerate(keys) if key not in held]
    valid = [i for i, key in enumerate(keys) if key in held]
    return train, valid
