"""The file the presence test app's hooks write (``tests/apps/presence_app.py``), as the tests read it."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .helpers import wait_for
from .servers import Gunicorn


class HookLog:
    """One JSON line per hook call, appended by every worker of every master that shares it."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="pushsvc-hooks-", suffix=".jsonl")
        os.close(handle)
        self.path = Path(name)

    def entries(self, hook: str | None = None, client: str | None = None) -> list[dict[str, Any]]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        found = [json.loads(line) for line in lines if line.endswith("}")]
        return [e for e in found if (hook is None or e["hook"] == hook)
                and (client is None or e["client"] == client)]

    def wait(self, hook: str, client: str, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait until ``hook`` was called ``count`` times for ``client``; those calls."""
        assert wait_for(lambda: len(self.entries(hook, client)) >= count, timeout), \
            f"{hook} of {client}: {self.entries(client=client)}"
        return self.entries(hook, client)

    def transitions(self, client: str) -> list[str]:
        return [e["hook"] for e in self.entries(client=client) if e["hook"] in ("online", "offline")]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def presence_env(log: HookLog, *, grace: float = 1.0, **extra: str) -> dict[str, str]:
    """The presence app's settings: its hook log, a short grace period (tests that reconnect within it
    take 2 s, so a loaded machine's delays stay well inside it)."""
    return {"PRESENCE_LOG": str(log.path), "PUSHSVC_PRESENCE_GRACE_SECONDS": str(grace),
            "PUSHSVC_HEARTBEAT_SECONDS": "1", **extra}


PRESENCE_APP = "tests.apps.presence_app:app"


@contextlib.contextmanager
def presence_server(**extra: str) -> Iterator[tuple[Gunicorn, HookLog]]:
    """The presence app under gunicorn with its own hook log (removed afterwards) and ``extra`` settings."""
    log = HookLog()
    try:
        with Gunicorn(app=PRESENCE_APP, env=presence_env(log, **extra)) as server:
            yield server, log
    finally:
        log.remove()
