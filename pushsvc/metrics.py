"""Prometheus metrics: the families pushsvc exports, and the text of ``GET /metrics``.

Under gunicorn every worker counts in its own process. ``gunicorn.conf.py`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before anything imports ``prometheus_client``; each
worker then writes its values to memory-mapped files there, and a scrape, whichever worker answers it,
adds up all of them. Without that variable (a Flask dev server, a script, the tests' in-process apps) the
same metrics live in the process's default registry. The code path is the same; only :func:`render` looks
at which one is in force.

Metric objects are module globals, as ``prometheus_client`` wants: several apps in one process add into
the same series.
"""

from __future__ import annotations

import os
from collections import Counter as _Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Read once: prometheus_client chose file-backed or in-memory values when it was imported, just now.
MULTIPROC_DIR = os.environ.get(MULTIPROC_ENV) or None

# Publish latency is a dict insert and a loop of put_nowait in memory, a round trip with Redis:
# sub-millisecond to a few hundred milliseconds covers both.
PUBLISH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5)

CONNECTIONS = Gauge(
    "pushsvc_connections", "Open event streams.",
    # livesum: a worker that died (a deploy, a crash) stops counting at once.
    multiprocess_mode="livesum")
CONNECTIONS_OPENED = Counter("pushsvc_connections_opened", "Event streams opened.")
CONNECTIONS_CLOSED = Counter("pushsvc_connections_closed", "Event streams ended, for any reason.")
PUBLISHED = Counter("pushsvc_events_published", "Events accepted for publishing, by target kind.",
                    ["target"])
DELIVERED = Counter("pushsvc_events_delivered",
                    "Events queued on an open stream, by target kind (one per stream reached).", ["target"])
SLOW_DISCONNECTS = Counter("pushsvc_slow_disconnects",
                           "Streams cut off for not keeping up, by reason (queue full, write timeout).",
                           ["reason"])
REPLAYS = Counter("pushsvc_replays", "Resumes with a Last-Event-ID.")
REPLAYED_EVENTS = Counter("pushsvc_replayed_events", "Events written from history on resume.")
RESETS = Counter("pushsvc_resets", "Resumes answered with event: reset, by reason.", ["reason"])
REFUSED = Counter("pushsvc_refused", "Subscribes turned away (busy, restarting, closed), by reason.",
                  ["reason"])
BROKER_ERRORS = Counter("pushsvc_broker_errors", "Publishes the broker could not take.")
DRAINED = Counter("pushsvc_drained_connections",
                  "Streams ended with a retry hint because the worker was shutting down.")
PUBLISH_SECONDS = Histogram("pushsvc_publish_seconds", "Time to hand one publish call to the broker.",
                            buckets=PUBLISH_BUCKETS)


class LabelledCounter(_Tally):
    """A ``collections.Counter`` whose every increase is added to a labelled Prometheus counter.

    ``tally[label] += n`` reads as before and keeps a local total; the delta goes to the metric.
    """

    def __init__(self, metric: Counter):
        super().__init__()
        self._metric = metric

    def __setitem__(self, label: str, value: Any) -> None:
        delta = value - self[label]
        if delta > 0:
            self._metric.labels(label).inc(delta)
        super().__setitem__(label, value)

    def __reduce__(self) -> Any:  # a Counter subclass with a required argument: copy as a plain one
        return (_Tally, (dict(self),))


class CountedInt:
    """An integer attribute whose every increase is added to a Prometheus counter."""

    def __init__(self, metric: Counter):
        self._metric = metric
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = "_" + name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__.get(self._name, 0)

    def __set__(self, obj: Any, value: int) -> None:
        delta = value - obj.__dict__.get(self._name, 0)
        if delta > 0:
            self._metric.inc(delta)
        obj.__dict__[self._name] = value


def prime(metric: Counter, labels: Iterable[str]) -> None:
    """Export a zero for each of the usual label values from the start."""
    for label in labels:
        metric.labels(label)


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
