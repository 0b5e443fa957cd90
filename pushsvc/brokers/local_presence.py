"""Presence transitions within one worker, for the memory broker: the worker is the whole service.

Streams per unit (:class:`~pushsvc.transitions.UnitCounts`) follow the registry. A unit's first stream
reports ``online`` unless its ``offline`` was still pending; its last stream ending arms a timer of the
grace period, and the ``offline`` goes out only if no stream came back by then. The consumers (hooks, the
webhook) read their own queue in their own greenlet, so none of them ever waits for another, and the
registry's listener only counts and queues.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import gevent
from gevent.pool import Pool
from gevent.queue import Queue

from ..registry import Connection, Registry
from ..transitions import BATCH, OFFLINE, ONLINE, Consumer, State, Tracking, Transition, split_unit, units_of

log = logging.getLogger(__name__)


class LocalTracker:
    """Debounced presence of this worker's streams, fed to ``tracking``'s consumers in process."""

    def __init__(self, tracking: Tracking):
        self.tracking = tracking
        self.counts: dict[str, int] = {}
        self._pending: dict[str, gevent.Greenlet] = {}
        self._epoch = int(time.time() * 1000)
        self._seq = 0
        self._queues = [(consumer, Queue()) for consumer in tracking.consumers]
        self._local: Queue = Queue()
        self._greenlets: list[gevent.Greenlet] = []
        self.registry: Registry | None = None

    def attach(self, registry: Registry) -> None:
        """Follow ``registry`` and start the consumers' greenlets (once, however often asked)."""
        if self.registry is registry:
            return
        self.detach()
        self.registry = registry
        registry.listeners.append(self._on_change)
        self._greenlets = [gevent.spawn(self._consume, c, q) for c, q in self._queues]
        if self.tracking.local is not None:
            self._greenlets.append(gevent.spawn(self._consume_local))

    def detach(self) -> None:
        if self.registry is not None and self._on_change in self.registry.listeners:
            self.registry.listeners.remove(self._on_change)
        self.registry = None
        for greenlet in [*self._greenlets, *self._pending.values()]:
            greenlet.kill(block=False)
        self._greenlets = []
        self._pending.clear()

    def _on_change(self, what: str, conn: Connection) -> None:
        delta = 1 if what == "connect" else -1
        for name in units_of(conn):
            before = self.counts.get(name, 0)
            after = before + delta
            if after > 0:
                self.counts[name] = after
            else:
                self.counts.pop(name, None)
            if before <= 0 < after:
                self._came(name)
            elif after <= 0 < before:
                self._pending[name] = gevent.spawn_later(self.tracking.grace_seconds, self._expire, name)

    def _came(self, name: str) -> None:
        timer = self._pending.pop(name, None)
        if timer is not None:
            timer.kill(block=False)  # back within the grace period: it never went offline
        else:
            self._emit(name, ONLINE)

    def _expire(self, name: str) -> None:
        self._pending.pop(name, None)
        if name not in self.counts:
            self._emit(name, OFFLINE)

    def _emit(self, name: str, state: State) -> None:
        client, group = split_unit(name)
        self._seq += 1
        transition = Transition(f"{self._epoch}-{self._seq}", state, client, int(time.time() * 1000), group)
        self.tracking.decided(state, "client" if group is None else "group", 1)
        if group is None:
            for _, queue in self._queues:
                queue.put(transition)
        elif self.tracking.local is not None:
            self._local.put(transition)

    def _consume(self, consumer: Consumer, queue: Queue) -> None:
        pool = Pool(consumer.concurrency)
        while True:
            batch = _batch(queue)
            pool.spawn(_handle, consumer, batch)  # waits while the consumer has no room: its own queue grows

    def _consume_local(self) -> None:
        local = self.tracking.local
        assert local is not None
        while True:
            batch = _batch(self._local)
            try:
                local(batch)
            except Exception:  # one bad batch must not stop presence events for good
                log.exception("in-band presence failed in worker %s", os.getpid())


def _batch(queue: Queue) -> list[Transition]:
    batch = [queue.get()]
    while len(batch) < BATCH and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


def _handle(consumer: Consumer, batch: Sequence[Transition]) -> None:
    try:
        consumer.handle(batch)
    except Exception:
        log.exception("presence consumer %s failed on %d transitions (first %s, client %s)", consumer.name,
                      len(batch), batch[0].id, batch[0].client)
