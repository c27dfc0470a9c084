"""Train a model with recurrent memory: `deepspeed launch/train.py --config CONFIG [key.sub=value ...]`.

    deepspeed --num_gpus 2 launch/train.py --config launch/configs/tiny.yaml
    deepspeed --num_gpus 8 launch/train.py --config launch/configs/smollm2_babilong.yaml output_dir=runs/a
    python launch/train.py --config launch/configs/tiny.yaml          # one process, no launcher

Overrides `key.sub=value` follow the config; see docs/configuration.md for every key. A config
error, a missing checkpoint or bad data prints one line `error: ...` (on rank 0) and exits with
status 2 on every rank.
"""

from __future__ import annotations

import argparse
import os
import sys

from rmt_scale.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    RankZeroError,
    UnsupportedModelError,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe (launch/configs/*.yaml)")
    parser.add_argument("--local_rank", type=int, default=None,
                        help="set by the deepspeed launcher; the rank is read from the environment")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. output_dir=runs/x seed=1 curriculum.stages.0.steps=50")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Imported after argument parsing so that --help is instant.
    from rmt_scale.distributed import teardown
    from rmt_scale.training.config import load_train_config
    from rmt_scale.training.loop import train

    try:
        config = load_train_config(args.config, args.overrides)
        train(config)
    except (ConfigError, DataError, CheckpointError, UnsupportedModelError, RankZeroError) as err:
        # The project's errors carry a one-line message. Every rank exits; rank 0 says why.
        if os.environ.get("RANK", "0") == "0":
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {message}", file=sys.stderr, flush=True)
        teardown(wait=False)
        return 2
    except BaseException:
        teardown(wait=False)
        raise
    teardown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
