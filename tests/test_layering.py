"""Imports point one way: the wire format and settings know nothing of ours, brokers nothing of HTTP,
and Flask appears only in the blueprint, the extension and the app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pushsvc"
FLASK_MODULES = {"blueprint", "extension", "app", "metrics_view"}
# Which of our modules each module may import (absent: anything below the HTTP layer).
ALLOWED_OURS = {
    "wire": set(),
    "config": set(),
    "targets": set(),
    "stats": set(),
    "registry": {"targets"},
    "history": {"registry", "targets"},
    "broker": {"registry", "targets"},
}
HTTP_LAYER = {"blueprint", "extension", "app", "cli", "worker"}


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(our modules, third-party top-level packages) imported by a module."""
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.module:
                    ours.add(node.module.split(".")[0])
                else:
                    ours.update(alias.name for alias in node.names)
            elif node.module:
                (ours if node.module.startswith("pushsvc") else theirs).add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(alias.name.split(".")[0] for alias in node.names)
    return ours, theirs


MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_imports_point_one_way(path):
    ours, theirs = imports(path)
    ours.discard("pushsvc")
    name = path.stem
    if name not in FLASK_MODULES:
        assert not theirs & {"flask", "werkzeug"}, f"{name} must not import Flask"
    if name in ALLOWED_OURS:
        assert ours <= ALLOWED_OURS[name], f"{name} imports {ours - ALLOWED_OURS[name]}"
    if name not in HTTP_LAYER:
        assert not ours & HTTP_LAYER, f"{name} imports the HTTP layer: {ours & HTTP_LAYER}"
    if name in ("wire", "config", "targets"):
        assert theirs <= {"__future__"} | set(__import__("sys").stdlib_module_names), f"{name}: stdlib only"
