"""All DeepSpeed code of the project: process group, config filling, engine, ZeRO-3, checkpoints.

This package is the only code that imports deepspeed (a test checks it); it is split in three
modules: `process` (process group, collectives), `engine` (config filling, engine, ZeRO-3,
training checkpoints) and `checkpoint_reader` (offline reading for export). Outside it, the trainer sees
plain functions: `init_process_group`, `fill_ds_config`, `create_engine`, `gathered`,
`save_checkpoint` / `load_checkpoint`, and a few collectives. Everything ZeRO-3-specific
(external parameters, gathering partitioned weights) is handled here and is a no-op otherwise.

Batch sizes have one source of truth, the training config: the DeepSpeed JSON leaves them "auto"
and `fill_ds_config` fills them; a number forced in the JSON that disagrees is an error.
"""

from rmt_scale.distributed.checkpoint_reader import read_trainable_weights  # noqa: F401
from rmt_scale.distributed.engine import (  # noqa: F401
    UNIVERSAL_DIR,
    create_engine,
    describe_partitioning,
    enable_universal_loading,
    export_model,
    fill_ds_config,
    gathered,
    load_checkpoint,
    needs_universal,
    parameter_count,
    prepare_universal,
    read_ds_config,
    resolve_ds_path,
    resolve_precision,
    save_checkpoint,
    set_learning_rate,
    trainable_state_dict,
    zero_stage,
)
from rmt_scale.distributed.process import (  # noqa: F401
    all_reduce_sum,
    barrier,
    device,
    env_rank,
    env_world_size,
    init_process_group,
    is_main,
    rank,
    rank0_first,
    teardown,
    world_size,
)
