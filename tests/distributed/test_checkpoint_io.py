"""distributed/: DeepSpeed's loads never unpickle code, a failed checkpoint write stops every rank,
and dist_timeout_minutes bounds every collective (issue 11, items 1, 11, 12).

The two-rank cases run two gloo processes (torch.multiprocessing, a few seconds) instead of a
training run: rank 1 fails or goes quiet, rank 0 must learn of it within a bound.
"""

from __future__ import annotations

import errno
import json
import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from rmt_scale.distributed import check_loadable, lost_rank_error, safe_torch_load
from rmt_scale.errors import CheckpointError
from tests.security_fixtures import write_crafted_pickle
from tests.training.helpers import free_port


def test_deepspeeds_checkpoint_engine_loads_safely_inside_the_block(tmp_path):
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    engine = TorchCheckpointEngine()
    crafted = write_crafted_pickle(tmp_path / "mp_rank_00_model_states.pt", tmp_path / "marker", module={})
    with safe_torch_load(), pytest.raises(CheckpointError, match=r"unsafe to load \(Unsupported global"):
        engine.load(str(crafted), map_location="cpu")
    assert not (tmp_path / "marker").exists()
    torch.save({"module": {"w": torch.ones(2)}}, tmp_path / "plain.pt")
    with safe_torch_load():
        assert engine.load(str(tmp_path / "plain.pt"))["module"]["w"].sum() == 2
    assert torch.load is torch.serialization.load  # restored after the block
    engine.load(str(crafted))  # outside the block DeepSpeed unpickles anything: the fixture is live
    assert (tmp_path / "marker").exists()


def test_check_loadable_reads_both_torch_formats(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "zip.pt")
    torch.save({"w": torch.ones(3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert check_loadable(tmp_path) == 2
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cut.pt").write_bytes((tmp_path / "zip.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.pt: unreadable, truncated or unsafe to load"):
        check_loadable(tmp_path)


def test_lost_rank_errors_are_named():
    timeout = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 6000ms for recv")
    assert "no answer from another rank within dist_timeout_minutes=0.1" in str(lost_rank_error(timeout, 0.1))
    gone = RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1234")
    assert "another rank exited during a collective operation" in str(lost_rank_error(gone, 30))
    assert lost_rank_error(RuntimeError("a bug"), 30) is None and lost_rank_error(KeyError("x"), 30) is None


# --- two ranks ---------------------------------------------------------------------------------


class _FakeEngine:
    """The shape of DeepSpeed's save_checkpoint: collectives between the ranks' file writes."""

    def __init__(self, inner):
        self.checkpoint_engine = inner

    def save_checkpoint(self, save_dir, tag, **kwargs):
        torch.distributed.barrier()
        self.checkpoint_engine.save({"w": torch.ones(2)}, f"{save_dir}/{tag}/rank{torch.distributed.get_rank()}.pt")
        torch.distributed.all_reduce(torch.ones(1))
        torch.distributed.barrier()


class _DiskFullOnRank1:
    def save(self, state, path):
        if path.endswith("rank1.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        torch.save(state, path)


def _rank(rank: int, port: int, root: str, scenario: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    from rmt_scale import distributed

    distributed.init_process_group(0.05)  # 3 seconds
    result = {}
    started = time.monotonic()
    try:
        if scenario == "timeout":
            group = torch.distributed.new_group([0, 1])  # as DeepSpeed makes its own groups
            if rank == 1:  # stopped: never joins the all-reduce below (at most 20 s, until rank 0 gave up)
                while time.monotonic() - started < 20 and not os.path.exists(f"{root}/rank0.json"):
                    time.sleep(0.2)
            else:
                torch.distributed.all_reduce(torch.ones(1), group=group)
        else:
            os.makedirs(f"{root}/save/tag", exist_ok=True)
            distributed.save_checkpoint(_FakeEngine(_DiskFullOnRank1()), f"{root}/save", "tag")
    except Exception as err:  # noqa: BLE001 - recorded for the test to judge
        lost = lost_rank_error(err, 0.05)
        result = {"error": str(lost if lost is not None else err), "kind": type(err).__name__}
    result["seconds"] = time.monotonic() - started
    with open(f"{root}/rank{rank}.json", "w") as handle:
        json.dump(result, handle)
    os._exit(0)  # a rank that gave up must not wait for its peer in the group's teardown


def two_ranks(tmp_path, scenario: str) -> list[dict]:
    context = mp.start_processes(_rank, args=(free_port(), str(tmp_path), scenario), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        assert time.monotonic() < deadline, "the ranks did not finish"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.distributed
def test_a_failed_write_on_one_rank_stops_both(tmp_path):
    rank0, rank1 = two_ranks(tmp_path, "disk-full")
    for result in (rank0, rank1):
        assert result["kind"] == "CheckpointError"
        assert result["error"] == f"disk full while saving {tmp_path}/save/tag/rank1.pt"
    assert (tmp_path / "save" / "tag" / "rank0.pt").is_file()


@pytest.mark.distributed
def test_the_timeout_bounds_collectives_on_deepspeeds_own_groups(tmp_path):
    """torch gives groups made with new_group its own default timeout (30 minutes for gloo), not
    the world group's; DeepSpeed's collectives run on such groups."""
    rank0, _ = two_ranks(tmp_path, "timeout")
    assert "no answer from another rank within dist_timeout_minutes=0.05" in rank0["error"]
    assert rank0["seconds"] < 15  # 3 s timeout; without the fix rank 0 waits until rank 1 exits (20 s)
