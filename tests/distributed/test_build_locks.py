"""A build lock left by a killed DeepSpeed extension build is a clear error, not a silent hang."""

from __future__ import annotations

import os
import time

import pytest

from rmt_scale.distributed.engine import STALE_BUILD_LOCK_MINUTES, refuse_stale_build_locks
from rmt_scale.errors import DistributedError


def make_lock(root, name: str, minutes_old: float):
    lock = root / "py311_cpu" / name / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    then = time.time() - minutes_old * 60
    os.utime(lock, (then, then))
    return lock


def test_an_old_lock_of_cpu_adam_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = make_lock(tmp_path, "cpu_adam", STALE_BUILD_LOCK_MINUTES + 45)
    with pytest.raises(DistributedError, match="cpu_adam extension is 60 minutes old") as err:
        refuse_stale_build_locks()
    assert str(lock) in str(err.value) and "delete it" in str(err.value)
    assert lock.exists()  # never deleted for the user: another launch might be building


def test_a_fresh_lock_or_another_extensions_lock_is_left_to_deepspeed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    make_lock(tmp_path, "cpu_adam", 1)  # another rank may be compiling right now
    make_lock(tmp_path, "some_other_op", 600)  # not one an optimizer section builds
    refuse_stale_build_locks()
