"""This worker's part of presence transitions in Redis: its counts per unit, its liveness, and sweeps.

The registry's listener only counts and marks units dirty; one greenlet writes the dirty units' counts a
few milliseconds later (one script call per round trip, however many streams open at once: a reload that
ends and opens a stream inside one round trip writes nothing). The keeper greenlet refreshes this worker's
liveness key and runs the sweep that any worker may run (:mod:`.transitions`); Redis's ``TIME`` decides
what is due, so the workers' clocks never matter. See docs/PRESENCE.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import gevent
import redis

from ...registry import Connection, Registry
from ...transitions import OFFLINE, ONLINE, Tracking, UnitCounts
from .presence import refresh_seconds
from .schema import Keys
from .transitions import Scripts

log = logging.getLogger(__name__)

# Due offline entries are turned into transitions this often (so an offline is at most this late), and
# dead workers are looked for every DEAD_EVERY sweeps.
SWEEP_SECONDS = 0.5
DEAD_EVERY = 4
SWEEP_MOST = 1000
# The transitions stream's length is capped at about this many entries, however long it is meant to keep
# them (a churn of 200 connects a second with one group each makes 800 a second).
KEEP_MOST = 1_000_000


class Tracker:
    """Counts this worker's streams per unit in Redis, and keeps it alive there."""

    def __init__(self, client: redis.Redis, keys: Keys, worker: str, tracking: Tracking, *,
                 ttl_seconds: float):
        self.redis = client
        self.keys = keys
        self.worker = worker
        self.tracking = tracking
        self.scripts = Scripts(client, keys)
        self.units = UnitCounts()
        self.grace_ms = int(tracking.grace_seconds * 1000)
        self.ttl_seconds = ttl_seconds
        self.alive_ms = int(ttl_seconds * 1000)
        self.keep_ms = int(tracking.keep_seconds * 1000)
        self.registry: Registry | None = None
        self._whole = True  # write everything next (first write, after a failure or a sweep)
        self._flushing = False
        self._keeper: gevent.Greenlet | None = None

    def attach(self, registry: Registry) -> None:
        if self.registry is registry:
            return
        self.registry = registry
        registry.listeners.append(self._on_change)
        # At once: the liveness key tells the other workers that this one's consumers are alive.
        self._flushing = True
        gevent.spawn(self._flush)
        self._keeper = gevent.spawn(self._keep)

    def stop(self) -> None:
        """Stop, and take this worker's share back at once: its clients' offlines are due after the grace
        period (a reconnect elsewhere cancels them), not after the liveness key expires."""
        if self._keeper is not None:
            self._keeper.kill(block=False)
            self._keeper = None
        if self.registry is not None and self._on_change in self.registry.listeners:
            self.registry.listeners.remove(self._on_change)
        self.registry = None
        try:
            self._apply([], whole=True)
            # Gone for the other workers at once: their next reclaim takes what this one's consumers held.
            self.redis.delete(self.keys.presence_alive(self.worker))
        except redis.RedisError as error:
            log.info("presence units of worker %s left to expire: %s", self.worker, error)

    def _on_change(self, what: str, conn: Connection) -> None:
        self.units.change(conn, 1 if what == "connect" else -1)
        if not self._flushing:
            self._flushing = True
            gevent.spawn(self._flush)

    def _flush(self) -> None:
        try:
            while self.units.dirty or self._whole:
                if self.registry is None:
                    return
                self.write()
        except redis.RedisError as error:
            log.warning("presence units of worker %s not written (%s); retrying in %.1f s", self.worker,
                        error, SWEEP_SECONDS)
        finally:
            self._flushing = False

    def write(self) -> None:
        """Write the changed units (everything, when that is due)."""
        whole = self._whole
        counts = self.units.everything() if whole else self.units.take()
        self._whole = False
        try:
            if self._apply(counts, whole=whole):
                return
            log.info("presence units of worker %s were taken back; writing them again", self.worker)
            # Redis forgot this worker (a sweep took it for dead, or Redis lost its data): write it all,
            # and have the units that have just left come and go, so that their offline is not lost.
            left = dict.fromkeys(name for name, count in counts if count == 0)
            self._apply([*((name, 1) for name in left), *((name, 0) for name in left),
                         *self.units.everything()], whole=True)
        except redis.RedisError:
            self._whole = True
            raise

    def _apply(self, counts: Sequence[tuple[str, int]], *, whole: bool) -> bool:
        made = self.scripts.apply(self.worker, counts, whole=whole, grace_ms=self.grace_ms,
                                  alive_ms=self.alive_ms)
        if made is None:
            return False
        self.tracking.decided(ONLINE, "client", made[0])
        self.tracking.decided(ONLINE, "group", made[1])
        return True

    def _keep(self) -> None:
        refresh_every = max(1, int(refresh_seconds(self.ttl_seconds) / SWEEP_SECONDS))
        tick = 0
        while True:
            gevent.sleep(SWEEP_SECONDS)
            tick += 1
            try:
                if self._whole or self.units.dirty:
                    self._flush_now()
                elif tick % refresh_every == 0 and not self.scripts.refresh(self.worker, self.alive_ms):
                    log.info("worker %s was taken for dead; writing its presence units again", self.worker)
                    self._whole = True
                    self._flush_now()
                self._sweep(tick % DEAD_EVERY == 0)
            except redis.RedisError as error:
                log.debug("presence keeper of worker %s: %s", self.worker, error)

    def _flush_now(self) -> None:
        if not self._flushing:
            self._flushing = True
            self._flush()

    def _sweep(self, find_dead: bool) -> None:
        dead, clients, groups = self.scripts.sweep(grace_ms=self.grace_ms, find_dead=find_dead,
                                                   keep_ms=self.keep_ms, keep_most=KEEP_MOST,
                                                   most=SWEEP_MOST)
        if dead:
            log.warning("worker %s took back the presence of %d worker(s) gone without a word", self.worker,
                        dead)
        self.tracking.decided(OFFLINE, "client", clients)
        self.tracking.decided(OFFLINE, "group", groups)
