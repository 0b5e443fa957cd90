"""A misspelt ``PUSHSVC_*`` variable is named at start-up, once, with the closest known name.

Known names are the settings, the gunicorn settings of ``pushsvc/server/gunicorn_conf.py`` and the
command-line client's; the tests below read those two files so that the declared lists cannot drift.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from pathlib import Path

import httpx
import pytest

import pushsvc
from pushsvc import create_app
from pushsvc.config import (
    CLIENT_VARIABLES,
    ENVIRONMENT_CHECKED,
    SERVER_VARIABLES,
    check_environment,
    known_variables,
    unknown_variables,
)

from .redis_tools import wait_all_workers
from .servers import Gunicorn, RedisServer

PACKAGE = Path(pushsvc.__file__).parent
TYPO, SUGGESTION = "PUSHSVC_HEARTBEAT_SECOND", "PUSHSVC_HEARTBEAT_SECONDS"


def variables_named_in(path: Path) -> set[str]:
    """Every string constant of a module that is a whole ``PUSHSVC_*`` name (not prose that mentions one)."""
    tree = ast.parse(path.read_text())
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and re.fullmatch(r"PUSHSVC_[A-Z0-9_]+", node.value)}


@pytest.mark.parametrize(("path", "declared"), [
    (PACKAGE / "server" / "gunicorn_conf.py", SERVER_VARIABLES),
    (PACKAGE / "cli.py", CLIENT_VARIABLES),
])
def test_the_declared_names_are_the_names_read(path: Path, declared: tuple[str, ...]):
    read = variables_named_in(path)
    assert read <= known_variables(), f"{path.name} reads names config.py does not declare"
    assert set(declared) <= read, f"config.py declares names {path.name} no longer reads"


def test_a_typo_is_named_with_the_closest_known_name():
    lines = unknown_variables({TYPO: "5", "PUSHSVC_WORKER": "2", "PUSHSVC_QQQ": "1", "HOME": "/root"})
    assert lines == [
        f"unknown setting {TYPO} in the environment is ignored; did you mean {SUGGESTION}?",
        "unknown setting PUSHSVC_QQQ in the environment is ignored; no pushsvc setting has a name like it",
        "unknown setting PUSHSVC_WORKER in the environment is ignored; did you mean PUSHSVC_WORKERS?",
    ]


@pytest.fixture(autouse=True)
def no_pushsvc_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test run's own PUSHSVC_* (CI's PUSHSVC_REQUIRE_* switches) are not what these tests check."""
    for name in [n for n in os.environ if n.startswith("PUSHSVC_")]:
        monkeypatch.delenv(name)


def test_every_known_name_passes_in_silence():
    assert unknown_variables(dict.fromkeys(known_variables(), "1")) == []
    assert {"PUSHSVC_URL", "PUSHSVC_BIND", "PUSHSVC_HEARTBEAT_SECONDS"} <= known_variables()


def test_the_environment_is_checked_once_per_process_tree(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENVIRONMENT_CHECKED, raising=False)
    monkeypatch.setenv(TYPO, "5")
    assert len(check_environment()) == 1
    assert check_environment() == []  # a worker forked after the check inherits the mark
    assert len(check_environment(always=True)) == 1  # the arbiter that starts a server checks anyway


def test_an_app_that_mounts_push_warns_once(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture):
    monkeypatch.delenv(ENVIRONMENT_CHECKED, raising=False)
    monkeypatch.setenv(TYPO, "5")
    with caplog.at_level(logging.WARNING, logger="pushsvc"):
        create_app()
        create_app()
    named = [r.getMessage() for r in caplog.records if TYPO in r.getMessage()]
    assert named == [f"unknown setting {TYPO} in the environment is ignored; did you mean {SUGGESTION}?"]


def typo_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if TYPO in line]


def test_gunicorn_warns_once_and_starts():
    with Gunicorn(env={TYPO: "5"}) as server:
        assert httpx.get(server.url("/healthz"), timeout=10).status_code == 200
        server.stop()
        lines = typo_lines(server.output())
    assert len(lines) == 1, lines
    assert "[WARNING]" in lines[0] and f"did you mean {SUGGESTION}?" in lines[0], lines


def test_gunicorn_with_two_workers_warns_once():
    redis = RedisServer().start()
    try:
        with Gunicorn(workers=2, env={TYPO: "5", "PUSHSVC_BROKER_URL": redis.url}) as server:
            wait_all_workers(server, redis.url)  # both workers have built the app
            server.stop()
            lines = typo_lines(server.output())
    finally:
        redis.cleanup()
    assert len(lines) == 1, lines
    assert "[WARNING]" in lines[0] and f"did you mean {SUGGESTION}?" in lines[0], lines
