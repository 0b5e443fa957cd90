"""What a worker did, counted: the service writes ``stats.published[kind] += 1``; Prometheus sees it.

Every field reads like a plain number or ``collections.Counter`` (the total of this :class:`Stats`), and
every increase also goes to the matching family in :mod:`pushsvc.metrics`, which is what ``/metrics``
exports for all workers together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import metrics
from .broker import RESET_EXPIRED, RESET_UNKNOWN
from .metrics import CountedInt, LabelledCounter
from .targets import KINDS

if TYPE_CHECKING:
    from .registry import Connection, Registry

# Dashboards and alerts want a 0 before the first event, not a series that appears out of nowhere.
metrics.prime(metrics.PUBLISHED, KINDS)
metrics.prime(metrics.DELIVERED, KINDS)
metrics.prime(metrics.SLOW_DISCONNECTS, ("queue full", "write timeout"))
metrics.prime(metrics.RESETS, (RESET_UNKNOWN, RESET_EXPIRED))


class Stats:
    """The counters of one :class:`~pushsvc.service.Service`, mirrored into Prometheus."""

    connections_opened = CountedInt(metrics.CONNECTIONS_OPENED)
    connections_closed = CountedInt(metrics.CONNECTIONS_CLOSED)
    replays = CountedInt(metrics.REPLAYS)
    replayed_events = CountedInt(metrics.REPLAYED_EVENTS)
    broker_errors = CountedInt(metrics.BROKER_ERRORS)
    drained = CountedInt(metrics.DRAINED)

    def __init__(self) -> None:
        self.published = LabelledCounter(metrics.PUBLISHED)  # by target kind
        self.delivered = LabelledCounter(metrics.DELIVERED)  # by target kind
        self.slow_disconnects = LabelledCounter(metrics.SLOW_DISCONNECTS)  # by reason
        self.resets = LabelledCounter(metrics.RESETS)  # by reason
        self.refused = LabelledCounter(metrics.REFUSED)  # busy, restarting, closed
        self.publish_seconds = metrics.PUBLISH_SECONDS

    def watch(self, registry: Registry) -> None:
        """Count the registry's deliveries and follow its open connections."""
        registry.delivered = self.delivered
        registry.listeners.append(self._on_connection)

    @staticmethod
    def _on_connection(change: str, conn: Connection) -> None:
        if change == "connect":
            metrics.CONNECTIONS.inc()
        else:
            metrics.CONNECTIONS.dec()
