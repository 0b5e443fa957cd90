"""``GET /metrics``: the Prometheus text of every worker's counters (the families live in :mod:`.stats`).

Under gunicorn every worker counts in its own process. ``gunicorn.conf.py`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before anything imports ``prometheus_client``; each
worker then writes its values to memory-mapped files there, and a scrape, whichever worker answers it,
adds up all of them. Without that variable (a Flask dev server, a script, in-process tests) the same
families live in the process's default registry. The code path is the same; only :func:`render` looks at
which one is in force.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from . import stats
from .model import KINDS, RESET_REASONS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Read once: prometheus_client chose file-backed or in-memory values when it was imported.
MULTIPROC_DIR = os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The Prometheus text of every worker's metrics, and its content type."""
    if MULTIPROC_DIR is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, MULTIPROC_DIR)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Forget the live gauges of a worker that is gone (gunicorn's ``child_exit`` calls this)."""
    if MULTIPROC_DIR is not None:
        mark_process_dead(pid, MULTIPROC_DIR)


def _prime(metric: Counter, labels: Iterable[str]) -> None:
    for label in labels:
        metric.labels(label)


# Dashboards and alerts want a 0 before the first event, not a series that appears out of nowhere.
_prime(stats.PUBLISHED, KINDS)
_prime(stats.DELIVERED, KINDS)
_prime(stats.SLOW_DISCONNECTS, ("queue full", "write timeout"))
_prime(stats.RESETS, RESET_REASONS)
_prime(stats.HOOK_ERRORS, stats.HOOK_KINDS)
for _state in ("online", "offline"):
    for _scope in ("client", "group"):
        stats.TRANSITIONS.labels(_state, _scope)
