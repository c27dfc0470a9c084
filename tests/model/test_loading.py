"""model/loading.py: the device rule and where a checkpoint that does not load is reported."""

from __future__ import annotations

import pytest
import torch

from rmt_scale.errors import AdapterError, GGUFError, InputError
from rmt_scale.model.loading import load_causal_lm, parse_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert parse_device("auto").type == parse_device(None).type == expected
    assert parse_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["banana", "mps", "cuda:x", ""])
def test_names_that_are_not_a_device(name):
    with pytest.raises(InputError, match="unknown device"):
        parse_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu(name):
    with pytest.raises(InputError, match="no CUDA device is available here; use cpu"):
        parse_device(name)


def test_a_checkpoint_that_does_not_load(tmp_path):
    with pytest.raises(AdapterError, match="no such directory"):
        load_causal_lm(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="cannot load the checkpoint"):
        load_causal_lm(tmp_path)
    with pytest.raises(GGUFError, match="cannot load the checkpoint"):
        load_causal_lm(tmp_path, error=GGUFError)
