"""The files shipped with the package (training recipes, DeepSpeed JSONs) and where fetched models live.

    rmt_scale/resources/recipes/NAME.yaml     `rmt-scale train --config NAME`
    rmt_scale/resources/deepspeed/NAME.json   `deepspeed: NAME` in a recipe

They are package data, so an installed wheel finds them without a clone; in a clone,
`launch/configs` and `ds_configs` are symlinks to these directories, so the paths written in older
recipes and commands (`launch/configs/tiny.yaml`, `ds_configs/zero2.json`) keep working.

A name is looked up among the shipped files only when no file of that path exists: a path relative
to the working directory always wins, so an edited copy (`rmt-scale configs cp tiny tiny.yaml`)
is what `--config tiny.yaml` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rmt_scale.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"
# Directories of a clone whose files are the shipped ones (older commands name them).
_LEGACY_DIRS = {Path("launch/configs"), Path("ds_configs")}


def models_home() -> Path:
    """Where rmt-scale keeps the models it fetches: $RMT_SCALE_HOME/models, default
    ~/.cache/rmt-scale/models. A model there is also found by its directory name."""
    home = os.environ.get("RMT_SCALE_HOME") or Path.home() / ".cache" / "rmt-scale"
    return Path(home).expanduser() / "models"


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def ds_config_names() -> list[str]:
    return sorted(path.stem for path in DEEPSPEED_DIR.glob("*.json"))


def _find(name_or_path: str | Path, directory: Path, suffix: str, what: str, kind: str,
          names: list[str]) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.absolute()
    if path.parent == Path(".") or path.parent in _LEGACY_DIRS:
        shipped = directory / (path.name if path.suffix == suffix else f"{path.name}{suffix}")
        if shipped.is_file():
            return shipped
    raise ConfigError(f"{what} {name_or_path} not found: no such file, and no shipped {kind} of that "
                      f"name ({', '.join(names)})")


def find_recipe(name_or_path: str | Path) -> Path:
    """The YAML recipe `name_or_path` names: a file (relative paths from the working directory),
    else a shipped recipe by name ("tiny", "tiny.yaml", "launch/configs/tiny.yaml").

    Raises:
        ConfigError: Neither a file nor a shipped recipe; the message lists the shipped names.
    """
    return _find(name_or_path, RECIPES_DIR, ".yaml", "config file", "recipe", recipe_names())


def find_ds_config(name_or_path: str | Path) -> Path:
    """The DeepSpeed JSON `name_or_path` names: a file (relative paths from the working directory
    first), else a shipped one by name ("zero3", "zero3.json", "ds_configs/zero3.json").

    Raises:
        ConfigError: Neither a file nor a shipped JSON; the message lists the shipped names.
    """
    return _find(name_or_path, DEEPSPEED_DIR, ".json", "deepspeed config", "DeepSpeed JSON",
                 ds_config_names())


def recipe_summary(path: Path) -> str:
    """The first line of a recipe's description: its first comment line that is not a command
    (every recipe opens with the commands that run it)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith(("rmt-scale ", "deepspeed ", "python ")):
            return text
    return ""


def list_recipes() -> list[tuple[str, str]]:
    """(name, summary) of every shipped recipe."""
    return [(name, recipe_summary(RECIPES_DIR / f"{name}.yaml")) for name in recipe_names()]


def ds_config_summary(path: Path) -> str:
    """What a DeepSpeed JSON does, in a few words (ZeRO stage, what is offloaded)."""
    try:
        zero = json.loads(path.read_text()).get("zero_optimization", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return "unreadable"
    offloaded = [part for part, key in (("optimizer", "offload_optimizer"), ("parameters", "offload_param"))
                 if key in zero]
    text = f"ZeRO stage {zero.get('stage', 0)}"
    return text + (f", {' and '.join(offloaded)} offloaded to CPU" if offloaded else "")


def list_ds_configs() -> list[tuple[str, str]]:
    """(name, summary) of every shipped DeepSpeed JSON."""
    return [(name, ds_config_summary(DEEPSPEED_DIR / f"{name}.json")) for name in ds_config_names()]
