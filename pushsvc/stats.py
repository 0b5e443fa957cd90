"""What the workers did, counted in Prometheus families; :class:`Stats` is how the service counts.

The service writes ``stats.published[kind] += 1`` or ``stats.replays += 1``: each field reads like a
plain number or ``collections.Counter`` (this service's own total), and every increase also goes to the
matching Prometheus family below. :mod:`pushsvc.metrics` exports those, for all workers together.

The families are module globals, as ``prometheus_client`` wants: several services in one process add
into the same series. Under gunicorn each worker writes them to its own files (see ``gunicorn.conf.py``).
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Publish latency is a dict insert and a loop of put_nowait in memory, a round trip with Redis:
# a tenth of a millisecond to a few hundred milliseconds covers both.
# The application's hooks (pushsvc.lifecycle), the label of their error count.
HOOK_KINDS = ("connect", "disconnect", "online", "offline")
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
REFUSED = Counter("pushsvc_refused",
                  "Subscribes turned away (full, restarting, broker unavailable, closed, unauthorized, "
                  "forbidden), by reason.", ["reason"])
BROKER_ERRORS = Counter("pushsvc_broker_errors", "Publishes the broker could not take.")
DRAINED = Counter("pushsvc_drained_connections",
                  "Streams ended with a retry hint because their worker was shutting down.")
TRANSITIONS = Counter("pushsvc_presence_transitions",
                      "Presence transitions decided, by type (online, offline) and scope (client: the "
                      "on_online/on_offline hooks and webhooks; group: event: presence).", ["type", "scope"])
HOOK_ERRORS = Counter("pushsvc_hook_errors",
                      "Application hooks that raised, by hook (connect, disconnect, online, offline).",
                      ["hook"])
WEBHOOK_DELIVERIES = Counter("pushsvc_webhook_deliveries", "Webhook batches the receiver accepted (2xx).")
WEBHOOK_EVENTS = Counter("pushsvc_webhook_events", "Transitions in webhook batches the receiver accepted.")
WEBHOOK_RETRIES = Counter("pushsvc_webhook_retries",
                          "Webhook POSTs that failed (non-2xx, timeout, no connection) and are retried.")
WEBHOOK_FAILURES = Counter("pushsvc_webhook_failures",
                           "Webhook batches given up after PUSHSVC_WEBHOOK_RETRY_SECONDS of retries.")
PUBLISH_SECONDS = Histogram("pushsvc_publish_seconds", "Time to hand one publish call to the broker.",
                            buckets=PUBLISH_BUCKETS)


class LabelledCounter(Tally):
    """A ``collections.Counter`` whose every increase is added to a labelled Prometheus counter."""

    def __init__(self, metric: Counter):
        super().__init__()
        self._metric = metric
        # labels() validates and locks on every call; the handful of labels are looked up once each.
        self._children: dict[str, Any] = {}

    def __setitem__(self, label: str, value: Any) -> None:
        delta = value - self[label]
        if delta > 0:
            child = self._children.get(label)
            if child is None:
                child = self._children[label] = self._metric.labels(label)
            child.inc(delta)
        super().__setitem__(label, value)

    def __reduce__(self) -> Any:  # copies and pickles are plain Counters: the metric stays behind
        return (Tally, (dict(self),))


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


class Stats:
    """The counters of one service, mirrored into the Prometheus families."""

    connections_opened = CountedInt(CONNECTIONS_OPENED)
    connections_closed = CountedInt(CONNECTIONS_CLOSED)
    replays = CountedInt(REPLAYS)
    replayed_events = CountedInt(REPLAYED_EVENTS)
    broker_errors = CountedInt(BROKER_ERRORS)
    drained = CountedInt(DRAINED)
    webhook_deliveries = CountedInt(WEBHOOK_DELIVERIES)
    webhook_events = CountedInt(WEBHOOK_EVENTS)
    webhook_retries = CountedInt(WEBHOOK_RETRIES)
    webhook_failures = CountedInt(WEBHOOK_FAILURES)

    def __init__(self) -> None:
        self.published = LabelledCounter(PUBLISHED)  # by target kind
        self.delivered = LabelledCounter(DELIVERED)  # by target kind; the registry counts into it
        self.slow_disconnects = LabelledCounter(SLOW_DISCONNECTS)  # by reason
        self.resets = LabelledCounter(RESETS)  # by reason
        self.refused = LabelledCounter(REFUSED)  # full, restarting, broker unavailable, closed, auth
        self.publish_seconds = PUBLISH_SECONDS
        self.hook_errors = LabelledCounter(HOOK_ERRORS)  # by hook

    @staticmethod
    def transitions(state: str, scope: str, count: int) -> None:
        """Presence transitions decided in this process (see :class:`pushsvc.transitions.Tracking`)."""
        if count > 0:
            TRANSITIONS.labels(state, scope).inc(count)

    @staticmethod
    def on_connection(change: str, conn: object) -> None:
        """A registry listener: follow the number of open streams."""
        if change == "connect":
            CONNECTIONS.inc()
        else:
            CONNECTIONS.dec()
