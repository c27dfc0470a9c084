"""Only the rmt_scale/distributed package imports deepspeed (and only it knows about ZeRO-3)."""

from __future__ import annotations

import ast

from tests.training.helpers import REPO


def imports_of(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_only_the_distributed_module_imports_deepspeed():
    files = list((REPO / "rmt_scale").rglob("*.py")) + list((REPO / "launch").rglob("*.py"))
    offenders = [str(p.relative_to(REPO)) for p in files
                 if any(name.split(".")[0] == "deepspeed" for name in imports_of(p))]
    assert offenders and all(o.startswith("rmt_scale/distributed/") for o in offenders), offenders


def test_zero3_handling_lives_in_the_distributed_module():
    for path in (REPO / "rmt_scale").rglob("*.py"):
        if path.parent.name == "distributed":
            continue
        text = path.read_text()
        assert "GatheredParameters" not in text and "register_external_parameter" not in text, path
