"""Imports point one way: the wire format, settings and model know nothing of ours, brokers nothing of HTTP,
and Flask appears only in the blueprint, the extension and the app."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pushsvc"
FLASK_MODULES = {"blueprint", "inputs", "extension", "app"}
STDLIB_ONLY = {"wire", "config", "model", "tickets", "limits", "cli", "cli_client", "transitions"}
# Which of our modules each module may import (a module not listed: anything but the HTTP layer).
ALLOWED_OURS = {
    "wire": set(),
    "config": set(),
    "model": set(),
    "tickets": set(),
    "transitions": set(),
    "cli": {"cli_client"},
    "cli_client": set(),
    "stats": set(),
    "registry": {"model"},
    "messages": {"wire", "config", "model"},
    "auth": {"config", "tickets"},
    "hooks": {"stats", "transitions"},
    "webhook": {"config", "stats", "transitions"},
}
# The HTTP and process layer: nothing below it may import it.
HTTP_LAYER = {"blueprint", "inputs", "extension", "app", "wsgi", "cli", "worker", "server.worker",
              "server.logging", "server.gunicorn_conf"}
# Brokers know nothing of HTTP, of the service that drives them, or of auth.
ABOVE_BROKERS = HTTP_LAYER | {"service", "stream", "auth", "cors", "server.peer", "server.runtime", "hooks",
                              "lifecycle", "webhook"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(our modules as dotted names under pushsvc, third-party top-level packages) a module imports."""
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.stem == "__init__" else here[:-1]
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                ours.add(".".join([*base, node.module]))
            else:
                ours.update(".".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "pushsvc":
                ours.add(node.module.removeprefix("pushsvc").lstrip("."))
            else:
                theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(alias.name.split(".")[0] for alias in node.names)
    ours.discard("")
    return ours, theirs


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) or "pushsvc" for p in MODULES])
def test_imports_point_one_way(path):
    name = module_name(path)
    ours, theirs = imports(path)
    if name not in FLASK_MODULES:
        assert not theirs & {"flask", "werkzeug"}, f"{name} must not import Flask"
    if name in ALLOWED_OURS:
        assert ours <= ALLOWED_OURS[name], f"{name} imports {ours - ALLOWED_OURS[name]}"
    if name.startswith("brokers"):
        assert not ours & ABOVE_BROKERS, f"{name} imports {ours & ABOVE_BROKERS}"
    if name not in HTTP_LAYER and name:
        assert not ours & HTTP_LAYER, f"{name} imports the HTTP layer: {ours & HTTP_LAYER}"
    if name in STDLIB_ONLY:
        assert theirs <= {"__future__"} | set(sys.stdlib_module_names), f"{name}: standard library only"


def test_the_rules_see_relative_imports():
    ours, _ = imports(PACKAGE / "brokers" / "redis" / "broker.py")
    assert {"model", "registry", "brokers.base", "brokers.redis.schema"} <= ours
