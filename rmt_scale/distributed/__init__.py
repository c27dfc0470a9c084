"""All DeepSpeed code of the project: process group, the JSON, engine, ZeRO-3, checkpoints.

This package is the only code that imports deepspeed (a test checks it), and it takes plain values,
never the training config. Four modules: `process` (process group, ranks, collectives),
`ds_config` (precision, reading and filling the JSON's "auto" fields), `engine` (engine, ZeRO-3's
memory parameter, saving/loading/converting training checkpoints) and `checkpoint_reader`
(reading trainable weights offline, for export). Everything ZeRO-3-specific is handled here.

Batch sizes have one source of truth, the training config: the DeepSpeed JSON leaves them "auto"
and `fill_ds_config` fills them from the numbers it is given; a number forced in the JSON that
disagrees is an error.
"""

from rmt_scale.distributed.checkpoint_reader import (  # noqa: F401
    check_loadable,
    read_trainable_weights,
    safe_torch_load,
)
from rmt_scale.distributed.ds_config import (  # noqa: F401
    enable_universal_loading,
    fill_ds_config,
    read_ds_config,
    resolve_precision,
    zero_stage,
)
from rmt_scale.distributed.engine import (  # noqa: F401
    create_engine,
    describe_partitioning,
    is_disk_full,
    load_checkpoint,
    needs_universal,
    partitions_parameters,
    prepare_universal,
    release_engine,
    save_checkpoint,
    set_learning_rate,
    step_applied,
)
from rmt_scale.distributed.process import (  # noqa: F401
    all_reduce_sum,
    barrier,
    device,
    env_world_size,
    init_process_group,
    is_main,
    lost_rank_error,
    on_rank0,
    raise_if_any,
    rank,
    rank0_first,
    teardown,
    world_size,
)
