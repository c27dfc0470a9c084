"""`rmt-scale train` (start the DeepSpeed launcher on the per-rank entry) and `rmt-scale configs`
(list or copy the shipped recipes and DeepSpeed JSONs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from rmt_scale.cli.common import add_command
from rmt_scale.errors import InputError

WORKER = "rmt_scale.cli.train_worker"
# Without a GPU: 2 CPU ranks (gloo), so a laptop run goes through the same distributed code
# (ZeRO partitioning, checkpoint sharding) as a cluster run; every shipped recipe's global batch
# divides by 2.
CPU_RANKS = 2


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "train", "train memory + LoRA with DeepSpeed on this machine (or the nodes of a hostfile)",
        example="rmt-scale train --config tiny\n"
                "rmt-scale train --config smollm2_babilong --num-gpus 8 output_dir=runs/a seed=1\n"
                "rmt-scale train --config my_recipe.yaml --dry-run",
        description="Start DeepSpeed's launcher with one rmt_scale.cli.train_worker process per rank. "
                    "Works from any directory: recipes and DeepSpeed JSONs ship with the package.")
    parser.add_argument("--config", required=True,
                        help="a shipped recipe by name (see `rmt-scale configs ls`) or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. output_dir=runs/x curriculum.stages.0.steps=50")
    parser.add_argument("--num-gpus", type=int, default=None,
                        help=f"ranks per node (default: every local GPU; {CPU_RANKS} CPU ranks without one; "
                             "with --hostfile: the slots it lists)")
    parser.add_argument("--hostfile", default=None, help="DeepSpeed hostfile for several nodes (`host slots=N` lines)")
    parser.add_argument("--master-port", type=int, default=None, help="port of the rendezvous (default: a free port on one node, DeepSpeed's 29500 with --hostfile)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the run plan (config, filled DeepSpeed JSON, stages, outputs) and exit; "
                             "starts nothing and loads no weights")
    parser.set_defaults(func=_train)

    configs = add_command(subparsers, "configs", "list or copy the shipped recipes and DeepSpeed JSONs",
                          example="rmt-scale configs ls\nrmt-scale configs cp tiny my_recipe.yaml")
    actions = configs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add_command(actions, "ls", "list the shipped recipes and DeepSpeed JSONs",
                          example="rmt-scale configs ls")
    listing.set_defaults(func=_configs_ls)
    copy = add_command(actions, "cp", "copy a shipped recipe or DeepSpeed JSON for editing",
                       example="rmt-scale configs cp tiny my_recipe.yaml\nrmt-scale configs cp zero3 .")
    copy.add_argument("name", help="a recipe or DeepSpeed JSON name (rmt-scale configs ls)")
    copy.add_argument("dest", help="file to write, or an existing directory to write NAME.yaml/NAME.json into")
    copy.set_defaults(func=_configs_cp)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def hostfile_slots(path: str) -> list[int]:
    """Slots per node of a DeepSpeed hostfile (`host slots=N` lines; # starts a comment)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise InputError(f"--hostfile {path}: cannot read it ({err.strerror})") from None
    slots = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        if not fields.get("slots", "").isdigit():
            raise InputError(f"--hostfile {path}:{number}: expected `HOST slots=N`, got {line!r}")
        slots.append(int(fields["slots"]))
    if not slots:
        raise InputError(f"--hostfile {path}: lists no hosts")
    return slots


def ranks_per_node(args) -> int | None:
    """--num-gpus as given; else every local GPU or CPU_RANKS (None with a hostfile: its slots)."""
    if args.num_gpus is not None:
        if args.num_gpus < 1:
            raise InputError(f"--num-gpus must be at least 1, got {args.num_gpus}")
        return args.num_gpus
    if args.hostfile is not None:
        return None
    return local_gpus() or CPU_RANKS


def world_size(args) -> int:
    per_node = ranks_per_node(args)
    if args.hostfile is None:
        return per_node
    slots = hostfile_slots(args.hostfile)
    return sum(slots) if per_node is None else per_node * len(slots)


def launcher_command(args) -> list[str]:
    """The DeepSpeed launcher started by `rmt-scale train` (its --module form needs no clone)."""
    command = [sys.executable, "-m", "deepspeed.launcher.runner"]
    per_node = ranks_per_node(args)
    if per_node is not None:
        command += ["--num_gpus", str(per_node)]
    if args.hostfile is not None:
        command += ["--hostfile", args.hostfile]
    if args.master_port is not None:
        command += ["--master_port", str(args.master_port)]
    elif args.hostfile is None:
        # Two launches on one machine would otherwise share DeepSpeed's fixed port 29500, and the
        # second one's ranks would join the first one's rendezvous instead of starting their own.
        command += ["--master_port", str(free_port())]
    return command + ["--module", WORKER, "--config", args.config, *args.overrides]


def _train(args) -> int:
    from rmt_scale.training.config import load_train_config

    # Read the config here too: a bad key fails in one line before any process starts.
    config = load_train_config(args.config, args.overrides)
    if args.dry_run:
        from rmt_scale.training.plan import build_plan

        print(build_plan(config, args.config, args.overrides, world_size=world_size(args)).describe())
        return 0
    from rmt_scale.cli.train_worker import PARENT_REPORTS_INTERRUPT, resume_command

    env = dict(os.environ)
    if not local_gpus():
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would otherwise guess and warn
    env[PARENT_REPORTS_INTERRUPT] = "1"  # the ranks stay quiet on Ctrl-C: the line below says it once
    # On one node the launcher gets a process group of its own, so a Ctrl-C reaches this process
    # only, and `interrupt` passes it on to everything but DeepSpeed's runner (which has no handler
    # for it and would print a traceback). With a hostfile the runner does handle it (it stops the
    # remote ranks through pdsh), so there it shares the terminal's group as before.
    own_group = args.hostfile is None
    process = subprocess.Popen(launcher_command(args), env=env, start_new_session=own_group)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return process.wait()
    except KeyboardInterrupt:
        interrupt(process, own_group)
        print(f"interrupted; resume with: {resume_command(args.config, args.overrides)} (resume=auto)",
              file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a batch system's stop) ends the run like Ctrl-C


def interrupt(process: subprocess.Popen, own_group: bool) -> None:
    """Stop the launcher's ranks as a Ctrl-C in their terminal would, and wait for them.

    A second Ctrl-C while waiting kills them all at once.
    """
    import psutil  # a DeepSpeed dependency

    if own_group:
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            children = []  # the launcher is gone already
        for child in children:
            # One at a time: a child that exits between the listing and its signal (a short-lived
            # helper process) must not keep the signal from the launcher and the ranks after it.
            try:
                child.send_signal(signal.SIGINT)
            except psutil.Error:
                pass
    else:  # the runner relays it to the nodes (a Ctrl-C in the terminal reached it already)
        try:
            process.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass  # already gone
    try:
        process.wait()
    except KeyboardInterrupt:
        if own_group:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _configs_ls(args) -> int:
    from rmt_scale.resources import list_ds_configs, list_recipes

    recipes, ds_configs = list_recipes(), list_ds_configs()
    width = max(len(name) for name, _ in recipes + ds_configs)
    print("recipes (rmt-scale train --config NAME):")
    for name, summary in recipes:
        print(f"  {name:<{width}}  {summary}")
    print("DeepSpeed JSONs (deepspeed=NAME):")
    for name, summary in ds_configs:
        print(f"  {name:<{width}}  {summary}")
    print("copy one to edit it: rmt-scale configs cp NAME DEST")
    return 0


def _configs_cp(args) -> int:
    from rmt_scale import resources

    name = Path(args.name).stem
    if name in resources.recipe_names():
        source = resources.RECIPES_DIR / f"{name}.yaml"
    elif name in resources.ds_config_names():
        source = resources.DEEPSPEED_DIR / f"{name}.json"
    else:
        raise InputError(f"no shipped recipe or DeepSpeed JSON named {args.name!r}; "
                         f"`rmt-scale configs ls` lists them")
    dest = Path(args.dest).expanduser()
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists():
        raise InputError(f"{dest} exists; remove it or choose another destination (configs cp never overwrites)")
    if not dest.parent.is_dir():
        raise InputError(f"{dest.parent}: no such directory")
    shutil.copyfile(source, dest)
    print(f"copied {source.name} -> {dest}")
    return 0
