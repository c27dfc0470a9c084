"""Train a model with recurrent memory: `deepspeed launch/train.py --config CONFIG [key.sub=value ...]`.

    deepspeed --num_gpus 2 launch/train.py --config launch/configs/tiny.yaml
    deepspeed --num_gpus 8 launch/train.py --config launch/configs/smollm2_babilong.yaml output_dir=runs/a
    python launch/train.py --config launch/configs/tiny.yaml          # one process, no launcher

The clone form of `rmt-scale train --config NAME` (which needs no clone); both run
rmt_scale.cli.train_worker on every rank. --config takes a YAML file or a shipped recipe's name.
Overrides `key.sub=value` follow the config; see docs/configuration.md for every key. A config
error, a missing checkpoint or bad data prints one line `error: ...` (on rank 0) and exits with
status 2 on every rank.
"""

from __future__ import annotations

from rmt_scale.cli.train_worker import exit_rank, main

__all__ = ["exit_rank", "main"]  # main(argv) runs in-process and returns the exit status

if __name__ == "__main__":
    exit_rank()
