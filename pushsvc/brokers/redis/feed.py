"""Reading the transitions stream: in-band presence for this worker, and the consumer groups.

One greenlet per worker blocks in ``XREAD`` on the transitions stream, on a connection of its own. What
it reads are this worker's in-band group transitions (every worker reads them all). Each wake-up also
rings the doorbell for the consumers: for each (the hooks, the webhook) a non-blocking ``XREADGROUP``
takes what no worker has taken yet, so each transition goes to one consumer of the whole service. An
entry is acknowledged once its handler has returned. While a handler works (a webhook retrying for
minutes), its entries are touched (``XCLAIM`` to itself) so nobody takes them over; the entries of a
consumer whose worker died (its liveness key expired) are taken over by another worker, and entries of a
handler that failed once idle for :data:`CLAIM_IDLE_SECONDS`: at least once, never lost. See
docs/PRESENCE.md.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import gevent
import redis
from gevent.pool import Pool

from ...transitions import BATCH, Consumer, Tracking, Transition, client_transitions, group_transitions
from .connect import blocking_reader, disconnect
from .schema import Keys
from .transitions import parse_entry

log = logging.getLogger(__name__)

BLOCK_MS = 2000
CLAIM_IDLE_SECONDS = 30.0
TOUCH_SECONDS = 10.0
# Entries of dead consumers are looked for this often.
RECLAIM_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 2.0

Entries = list[tuple[bytes, dict[bytes, bytes]]]


class Feed:
    """The transitions stream, as this worker reads it."""

    def __init__(self, url: str, client: redis.Redis, keys: Keys, worker: str, tracking: Tracking, *,
                 connect_timeout: float):
        self.redis = client
        self.keys = keys
        self.worker = worker
        self.tracking = tracking
        self.blocking = blocking_reader(url, name=f"pushsvc-presence:{worker}", block_seconds=BLOCK_MS / 1000,
                                        connect_timeout=connect_timeout)
        self.pools = {c.name: Pool(c.concurrency) for c in tracking.consumers}
        self.last_id: str | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._reclaimed = 0.0

    def start(self) -> None:
        """Create the consumer groups (if new: from now on) and find the stream's end, then read on."""
        try:
            self._prepare()
        except redis.RedisError as error:
            log.warning("presence feed of worker %s cannot reach Redis yet: %s", self.worker, error)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        for pool in self.pools.values():
            pool.kill(block=False)
        disconnect(self.blocking)

    def _prepare(self) -> None:
        for consumer in self.tracking.consumers:
            self._create_group(consumer.name, "$")
        if self.last_id is None:
            newest = self.redis.xrevrange(self.keys.transitions, count=1)
            self.last_id = newest[0][0].decode() if newest else "0-0"

    def _create_group(self, name: str, start: str) -> None:
        try:
            self.redis.xgroup_create(self.keys.transitions, name, id=start, mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self.last_id is None:
                    self._prepare()
                self._read_once()
                failures = 0
            except redis.RedisError as error:
                failures += 1
                if failures == 1:
                    log.warning("presence feed of worker %s lost Redis: %s", self.worker, error)
                cap = min(BACKOFF_CAP_SECONDS, 0.1 * 2 ** min(failures, 10))
                gevent.sleep(random.uniform(cap / 2, cap))
            except Exception:  # a bug on one entry must not stop presence for good
                log.exception("presence feed of worker %s failed; reading on", self.worker)
                gevent.sleep(0.1)

    def _read_once(self) -> None:
        assert self.last_id is not None
        reply = self.blocking.xread({self.keys.transitions: self.last_id}, count=BATCH * 5, block=BLOCK_MS)
        for _, entries in reply or ():
            self.last_id = entries[-1][0].decode()
            self._local([parse_entry(raw_id, fields) for raw_id, fields in entries])
        reclaim = gevent.get_hub().loop.now() - self._reclaimed > RECLAIM_SECONDS
        if reclaim:
            self._reclaimed = gevent.get_hub().loop.now()
        for consumer in self.tracking.consumers:
            self._pull(consumer, reclaim)

    def _local(self, transitions: list[Transition]) -> None:
        groups = group_transitions(transitions)
        if groups and self.tracking.local is not None:
            self.tracking.local(groups)

    def _pull(self, consumer: Consumer, reclaim: bool) -> None:
        """Take new entries for ``consumer`` while it has room (and, now and then, a dead one's)."""
        pool = self.pools[consumer.name]
        while pool.free_count() > 0 and reclaim:
            entries = self._reclaim(consumer.name)
            if not entries:
                break
            pool.spawn(self._handle, consumer, entries)
        while pool.free_count() > 0:
            try:
                reply = self.redis.xreadgroup(consumer.name, self.worker, {self.keys.transitions: ">"},
                                              count=BATCH)
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                # Redis lost the stream (restarted empty): everything in the new one is unread.
                self._create_group(consumer.name, "0")
                continue
            entries = reply[0][1] if reply else []
            if not entries:
                return
            pool.spawn(self._handle, consumer, entries)

    def _reclaim(self, name: str) -> Entries:
        """Entries of consumers that are gone: at once for a worker whose liveness key expired (it died),
        after :data:`CLAIM_IDLE_SECONDS` for any other (a handler that failed). Gone consumers with
        nothing pending leave the group."""
        entries: Entries = []
        for info in self.redis.xinfo_consumers(self.keys.transitions, name):
            consumer = info["name"].decode() if isinstance(info["name"], bytes) else str(info["name"])
            if consumer == self.worker or self.redis.exists(self.keys.presence_alive(consumer)):
                continue
            if not info["pending"]:
                self.redis.xgroup_delconsumer(self.keys.transitions, name, consumer)
                continue
            held = self.redis.xpending_range(self.keys.transitions, name, "-", "+", BATCH - len(entries),
                                             consumername=consumer)
            ids = [item["message_id"] for item in held]
            if ids:
                entries += self.redis.xclaim(self.keys.transitions, name, self.worker, 0, ids)
            if len(entries) >= BATCH:
                break
        if len(entries) < BATCH:
            reply = self.redis.xautoclaim(self.keys.transitions, name, self.worker,
                                          int(CLAIM_IDLE_SECONDS * 1000), start_id="0-0",
                                          count=BATCH - len(entries))
            entries += reply[1]
        entries = [(raw_id, fields) for raw_id, fields in entries if fields]
        if entries:
            log.warning("worker %s took over %d presence transitions for %s from a consumer that is gone",
                        self.worker, len(entries), name)
        return entries

    def _handle(self, consumer: Consumer, entries: Entries) -> None:
        ids = [raw_id for raw_id, _ in entries]
        transitions = client_transitions(parse_entry(raw_id, fields) for raw_id, fields in entries)
        if transitions:
            toucher = gevent.spawn(self._touch, consumer.name, ids)
            try:
                consumer.handle(transitions)
            except Exception:  # not acknowledged: taken over again after CLAIM_IDLE_SECONDS
                log.exception("presence consumer %s failed on %d transitions (first %s, client %s)",
                              consumer.name, len(transitions), transitions[0].id, transitions[0].client)
                return
            finally:
                toucher.kill(block=False)
        self._ack(consumer.name, ids)

    def _touch(self, name: str, ids: Sequence[bytes]) -> None:
        while True:
            gevent.sleep(TOUCH_SECONDS)
            try:
                self.redis.xclaim(self.keys.transitions, name, self.worker, 0, list(ids), justid=True)
            except redis.RedisError as error:
                log.info("could not touch presence transitions of %s: %s", name, error)

    def _ack(self, name: str, ids: Sequence[Any]) -> None:
        for attempt in range(5):
            try:
                self.redis.xack(self.keys.transitions, name, *ids)
                return
            except redis.RedisError as error:
                log.info("ack of %d presence transitions for %s failed (%s); again", len(ids), name, error)
                gevent.sleep(0.2 * (attempt + 1))
        log.warning("%d presence transitions for %s left unacknowledged: they will be delivered again",
                    len(ids), name)
