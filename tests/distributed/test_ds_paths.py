"""Shipped recipes name ds_configs/*.json relative to the repository: that works from any directory."""

from __future__ import annotations

import pytest

from rmt_scale.distributed import resolve_ds_path
from rmt_scale.errors import ConfigError


def test_repository_relative_ds_config_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("zero1", "zero2", "zero2_offload", "zero3", "zero3_offload"):
        assert resolve_ds_path(f"ds_configs/{name}.json").is_file()


def test_missing_ds_config_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="deepspeed config ds_configs/nope.json not found"):
        resolve_ds_path("ds_configs/nope.json")
