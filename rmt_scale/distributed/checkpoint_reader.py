"""Reading DeepSpeed checkpoints without running anything in them.

Every torch file of a checkpoint is unpickled with `weights_only=True` and an allow-list of a few
plain DeepSpeed value classes: the offline reader of trainable weights (export), the pre-flight
check of a checkpoint before resume (`check_loadable`), and DeepSpeed's own loading and universal
conversion (`safe_torch_load`), which would otherwise unpickle anything.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from rmt_scale.errors import CheckpointError


def _allowed_globals() -> list:
    """The classes a DeepSpeed checkpoint pickles besides tensors and builtins.

    The optimizer files pickle a stage enum and a loss-scaler object (numbers only); those few
    classes are allowed, nothing else, so a crafted file cannot run code.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, OffloadDeviceEnum, LossScaler, DynamicLossScaler, fragment_address]


def _unsafe_load_error(path, err: Exception) -> CheckpointError:
    text = str(err).strip()
    unsafe = [line.strip() for line in text.splitlines() if "Unsupported global" in line]
    first = unsafe[0].split(" was not")[0] if unsafe else (text.splitlines()[0] if text else type(err).__name__)
    first = first.removeprefix("WeightsUnpickler error: ")  # "Unsupported global: GLOBAL io.open"
    return CheckpointError(f"{path}: unreadable, truncated or unsafe to load ({first})")


def _load_restricted(load, path, map_location="cpu", **kwargs):
    """`load` (torch.load) with weights_only=True and the allow-list; errors -> CheckpointError."""
    kwargs.pop("weights_only", None)  # DeepSpeed asks for False; nothing here honours that
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return load(path, map_location=map_location, weights_only=True, **kwargs)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for truncated/foreign files
        raise _unsafe_load_error(path, err) from None


def _safe_load(path: Path, mmap: bool = False) -> dict:
    """torch.load with weights_only=True, allowing only DeepSpeed's plain value classes."""
    state = _load_restricted(torch.load, path, mmap=mmap)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a DeepSpeed checkpoint file")
    return state


@contextlib.contextmanager
def safe_torch_load() -> Iterator[None]:
    """Within the block, every `torch.load` loads with weights_only=True and the allow-list.

    DeepSpeed's engine.load_checkpoint, its universal-checkpoint conversion and its universal
    loader call torch.load with weights_only=False from some twenty places in five modules, and
    only the first goes through a replaceable checkpoint engine; replacing torch.load for the
    duration of the load covers them all (DeepSpeed calls it as `torch.load`, read at call time).
    A file that needs anything else fails as a CheckpointError instead of running code.
    """
    original = torch.load

    def restricted(f, map_location=None, pickle_module=None, **kwargs):
        if pickle_module is not None:
            raise CheckpointError(f"{f}: refused a load with a custom pickle module")
        return _load_restricted(original, f, map_location, **kwargs)

    torch.load = restricted
    try:
        yield
    finally:
        torch.load = original


def check_loadable(directory: str | Path) -> int:
    """Unpickle every torch file under `directory` the safe way, so that a crafted or truncated
    file is refused before DeepSpeed (and the other ranks) start loading. Memory-mapped: the
    tensors are not read, only the pickles checked. Returns the number of files checked.

    Raises:
        CheckpointError: A file that is unreadable, truncated or unsafe to load.
    """
    files = sorted(Path(directory).rglob("*.pt"))
    for path in files:
        # torch maps only its zip format; a JSON that turns DeepSpeed's zip serialization off
        # gives the older single-pickle format, which is read whole.
        _load_restricted(torch.load, path, mmap=zipfile.is_zipfile(path))
    return len(files)


def read_trainable_weights(ds_dir: str | Path) -> dict[str, torch.Tensor]:
    """The trainable weights (fp32, full shapes) in a `save_checkpoint` directory, read offline.

    Works for every ZeRO stage (0-3, offloaded or not) and needs neither a process group nor the
    number of ranks that wrote it: ZeRO 1/2/3 weights are rebuilt from the fp32 master partitions
    in the optimizer files (under ZeRO-3 the module file holds empty placeholders), stage 0 from
    the module file. The same reconstruction as DeepSpeed's zero_to_fp32, but every file is
    loaded with weights_only=True (zero_to_fp32 unpickles with weights_only=False).

    Args:
        ds_dir: The DeepSpeed tag directory (checkpoint-NNNNNN/deepspeed).

    Returns:
        {parameter name of the wrapped model: fp32 tensor}.

    Raises:
        CheckpointError: Missing or truncated files, or partitions that do not add up.
    """
    from deepspeed.checkpoint.constants import (
        FP32_FLAT_GROUPS,
        OPTIMIZER_STATE_DICT,
        PARAM_ALIGNMENT_PADDINGS,
        PARAM_SHAPES,
        PARTITION_COUNT,
        SINGLE_PARTITION_OF_FP32_GROUPS,
    )

    ds_dir = Path(ds_dir)
    if not ds_dir.is_dir():
        raise CheckpointError(f"{ds_dir}: no DeepSpeed checkpoint directory")
    model_files = sorted(ds_dir.glob("*model_states.pt"))
    if not model_files:
        raise CheckpointError(f"{ds_dir}: no *_model_states.pt file")
    model_state = _safe_load(model_files[0])
    stage = int(model_state.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0))
    if PARAM_SHAPES not in model_state or "module" not in model_state:
        raise CheckpointError(f"{model_files[0]}: not a DeepSpeed model-state file")
    if stage == 0:
        # Without ZeRO there are no partitions and no param_shapes: the module dict holds the
        # weights themselves, only the trainable ones (saved with exclude_frozen_parameters).
        module = model_state["module"] or {}
        if not module:
            raise CheckpointError(f"{model_files[0]}: holds no weights")
        return {name: tensor.detach().float().clone() for name, tensor in module.items()}
    # [{name: shape}] per parameter group, in the order of the flat fp32 groups.
    shapes = [{name: torch.Size(shape) for name, shape in group.items()} for group in model_state[PARAM_SHAPES]]

    optim_files = sorted(ds_dir.glob("*_optim_states.pt"), key=_rank_of)
    if not optim_files:
        raise CheckpointError(f"{ds_dir}: ZeRO stage {stage} checkpoint without *_optim_states.pt files")
    states = [_safe_load(path)[OPTIMIZER_STATE_DICT] for path in optim_files]
    count = states[0][PARTITION_COUNT]
    count = max(count) if isinstance(count, list) else int(count)
    if count != len(optim_files) or [_rank_of(p) for p in optim_files] != list(range(count)):
        raise CheckpointError(f"{ds_dir}: written by {count} ranks but holds the optimizer files of "
                                  f"ranks {[_rank_of(p) for p in optim_files]}; a partial checkpoint?")
    if stage == 3:
        flat = [torch.cat([g.detach().float().reshape(-1) for g in s[FP32_FLAT_GROUPS]]) for s in states]
        return _unflatten_zero3(flat, shapes, ds_dir)
    paddings = states[0].get(PARAM_ALIGNMENT_PADDINGS)
    groups = [[g.detach().float().reshape(-1) for g in s[SINGLE_PARTITION_OF_FP32_GROUPS]] for s in states]
    return _unflatten_zero12(groups, shapes, paddings, count, ds_dir)


def _rank_of(path: Path) -> int:
    # zero_pp_rank_R_mp_rank_00_optim_states.pt (bf16_zero_pp_rank_R_... for the bf16 optimizer)
    parts = path.name.split("zero_pp_rank_")
    return int(parts[1].split("_")[0]) if len(parts) == 2 else 0


def _unflatten_zero3(flat: list[torch.Tensor], shapes: list[dict], where: Path) -> dict[str, torch.Tensor]:
    """ZeRO-3: every parameter is split evenly over the ranks (the last part padded), and each rank
    concatenates its parts in parameter order."""
    world = len(flat)
    weights, offset = {}, 0
    for group in shapes:
        for name, shape in group.items():
            part = -(-shape.numel() // world)  # ceil
            if offset + part > flat[0].numel():
                raise CheckpointError(f"{where}: the fp32 partitions are shorter than the parameters they "
                                          "should hold (truncated or from another model)")
            pieces = [f[offset:offset + part] for f in flat]
            weights[name] = torch.cat(pieces)[: shape.numel()].view(shape).clone()
            offset += part
    if offset != flat[0].numel():
        raise CheckpointError(f"{where}: {flat[0].numel() - offset} fp32 elements per rank left over")
    return weights


def _unflatten_zero12(groups: list[list[torch.Tensor]], shapes: list[dict], paddings, world: int,
                      where: Path) -> dict[str, torch.Tensor]:
    """ZeRO-1/2: each parameter group is one flat vector (parameters in order, padded at the end)
    cut into equal contiguous slices, one per rank."""
    weights = {}
    for index, group in enumerate(shapes):
        vector = torch.cat([rank_groups[index] for rank_groups in groups])
        offset = 0
        for param_index, (name, shape) in enumerate(group.items()):
            if offset + shape.numel() > vector.numel():
                raise CheckpointError(f"{where}: the fp32 partitions are shorter than the parameters "
                                          "they should hold (truncated or from another model)")
            weights[name] = vector[offset:offset + shape.numel()].view(shape).clone()
            offset += shape.numel()
            if paddings is not None:
                offset += paddings[index][param_index]
        align = 2 * world  # the end of a group is padded to a multiple of 2 x ranks
        if -(-offset // align) * align != -(-vector.numel() // align) * align:
            raise CheckpointError(f"{where}: used {offset} of {vector.numel()} fp32 elements of group "
                                      f"{index}; the checkpoint does not match its parameter shapes")
    return weights
