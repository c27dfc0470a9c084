"""The package's shape, enforced: layers import only downwards, only distributed/ imports deepspeed,
no module is over the size limit, and the package never reaches into the repository around it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rmt_scale"
MAX_LINES = 400

# Lower layers first; a module may import from its own layer's package and from any layer below.
# errors < config/resources < model < data < distributed < training < evaluation < export < serving < cli
LAYERS = [
    ("rmt_scale.errors",),
    ("rmt_scale.config", "rmt_scale.resources"),
    ("rmt_scale.model",),
    ("rmt_scale.data",),
    ("rmt_scale.distributed",),
    ("rmt_scale.training",),
    ("rmt_scale.evaluation",),
    ("rmt_scale.export",),
    ("rmt_scale.serving",),
    ("rmt_scale.cli",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, owning package) of an rmt_scale module; None for the package root."""
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return index, package
    return None


def imports_of(path: Path) -> list[str]:
    """Every module `path` imports, lazily or not, with relative imports made absolute."""
    tree = ast.parse(path.read_text())
    own = module_name(path).split(".")
    if path.name != "__init__.py":
        own = own[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own[: len(own) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from rmt_scale import training` imports the subpackage itself.
            found += [module] + [f"{module}.{alias.name}" for alias in node.names if module == "rmt_scale"]
    return found


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    strays = [module_name(p) for p in package_files()
              if layer_of(module_name(p)) is None and module_name(p) != "rmt_scale"]
    assert not strays, f"modules outside every layer (add them to a subpackage or to LAYERS): {strays}"


def test_layers_import_only_downwards():
    offenders = []
    for path in package_files():
        here = layer_of(module_name(path))
        for target in imports_of(path):
            there = layer_of(target)
            if there is None:
                continue
            if here is None:  # the public API (rmt_scale/__init__.py) re-exports the lowest layers
                if there[0] > layer_of("rmt_scale.model")[0]:
                    offenders.append(f"rmt_scale/__init__.py -> {target}")
                continue
            if there[0] > here[0] or (there[0] == here[0] and there[1] != here[1]
                                      and here[1] != "rmt_scale.config"):
                offenders.append(f"{module_name(path)} -> {target}")
    assert not offenders, "imports from a higher (or sibling) layer:\n" + "\n".join(offenders)


def test_the_package_never_imports_the_repository_around_it():
    offenders = [f"{module_name(p)} -> {name}" for p in package_files() for name in imports_of(p)
                 if name.split(".")[0] in ("benchmarks", "tests", "launch")]
    assert not offenders, offenders
    # An installed wheel has no repository: nothing may find files relative to it.
    climbing = [str(p.relative_to(REPO)) for p in package_files() if ".parents[" in p.read_text()]
    assert not climbing, f"paths found by climbing out of the package: {climbing}"


def test_only_the_distributed_package_imports_deepspeed():
    files = package_files() + sorted((REPO / "launch").rglob("*.py"))
    offenders = [str(p.relative_to(REPO)) for p in files
                 if any(name.split(".")[0] == "deepspeed" for name in imports_of(p))]
    assert offenders, "the distributed package should import deepspeed"
    assert all(o.startswith("rmt_scale/distributed/") for o in offenders), offenders


def test_zero3_handling_lives_in_the_distributed_package():
    for path in package_files():
        if "distributed" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text()
        assert "GatheredParameters" not in text and "register_external_parameter" not in text, path
        assert "zero_stage == 3" not in text, path


def test_the_model_core_knows_nothing_of_training_or_deepspeed():
    for path in sorted((PACKAGE / "model").rglob("*.py")):
        text = path.read_text()
        for word in ("deepspeed", "peft.get_peft_model", "print(", "os.environ"):
            assert word not in text, f"{path.relative_to(REPO)} mentions {word}"


@pytest.mark.parametrize("root", ["rmt_scale", "benchmarks", "launch", "tests"])
def test_no_file_is_over_the_size_limit(root):
    long = {str(p.relative_to(REPO)): n for p in sorted((REPO / root).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by job): {long}"


def test_the_public_api_imports_as_before():
    import rmt_scale
    from rmt_scale import ConfigError, RecurrentMemoryModel, RMTConfig, RMTScaleError

    assert issubclass(ConfigError, RMTScaleError)
    assert callable(RecurrentMemoryModel.wrap) and callable(RecurrentMemoryModel.from_pretrained)
    assert callable(RecurrentMemoryModel.save_pretrained) and callable(RecurrentMemoryModel.generate)
    assert RMTConfig().num_mem_tokens > 0
    assert isinstance(rmt_scale.__version__, str)


def test_every_error_class_derives_from_the_one_base():
    from rmt_scale import errors

    classes = [value for value in vars(errors).values()
               if isinstance(value, type) and issubclass(value, BaseException)]
    assert len(classes) > 5
    assert all(issubclass(cls, errors.RMTScaleError) for cls in classes)
    # No error class is defined anywhere else in the package.
    elsewhere = [f"{module_name(p)}.{node.name}" for p in package_files() if p.name != "errors.py"
                 for node in ast.walk(ast.parse(p.read_text()))
                 if isinstance(node, ast.ClassDef) and node.name.endswith("Error")]
    assert not elsewhere, elsewhere
