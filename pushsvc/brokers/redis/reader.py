"""The one reader of a worker: a greenlet blocked in ``XREAD`` on the event stream, fanning out in process.

It holds one Redis connection of its own, whatever the number of streams open in the worker. It also
reads this worker's *canary* stream, where a sibling greenlet writes a tick every second through the
ordinary connection pool: a tick read back proves the whole path (write, stream, this blocked read) works,
which a bare PING would not (a reader left blocked on a dead or demoted server answers nothing and
raises nothing). ``/healthz`` follows the age of the last tick read back.

When Redis goes away the reader reconnects with capped, jittered backoff and resumes from the last stream
id it read, so nothing is lost and nothing is read twice. If the stream has a new generation when it
comes back (Redis restarted, empty or from a snapshot, or Sentinel promoted a replica that lacks the
newest entries), the reader resumes after the newest entry it could have read already: its last one if
the stream still holds it, else the newest one of its generation or an older one (the rest were lost
with the old server, and everything after them is new).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis

from ...model import Frame, Target
from .connect import blocking_reader, disconnect
from .schema import Keys, decode_target, entry_frame, stream_id_tuple

log = logging.getLogger(__name__)

# XREAD waits this long for news; the canary wakes it every second anyway.
BLOCK_MS = 5000
# Entries taken per XREAD: a burst is fanned out in batches, the socket is read in few round trips.
BATCH = 500
CANARY_INTERVAL_SECONDS = 1.0
# Health fails when no canary tick came back for this long.
CANARY_STALE_SECONDS = 3.0
# While events flow (the previous read with entries ended less than LINGER_WHEN_SECONDS ago), the reader
# waits ``linger`` seconds (PUSHSVC_REDIS_READ_LINGER_MS) before it reads again, so events that come one at
# a time are read several per wake-up instead of one each. A lone event, or the first of a burst, is read
# at once: the reader is blocked in XREAD then. So it adds at most ``linger``, only while events come fast.
LINGER_WHEN_SECONDS = 0.02
# Reconnect backoff: doubling from the first step up to the cap, each wait a random part of it, so
# workers that lost Redis together do not come back together.
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0


class Reader:
    """Reads the stream for one worker and hands each event to ``dispatch(target, frame)``."""

    def __init__(self, url: str, keys: Keys, worker: str, dispatch: Callable[[Target, Frame], Any],
                 *, head: Callable[[], tuple[str, str]], connect_timeout: float, linger: float = 0.0):
        self.keys = keys
        self.worker = worker
        self.dispatch = dispatch
        # A pool of its own with one connection: the blocking read must never wait for, or hold, a
        # connection of the shared pool. It connects on first use, in the reader's greenlet, so building
        # a reader never fails or blocks while Redis is down (a worker respawned during an outage).
        self.redis = blocking_reader(url, name=f"pushsvc-reader:{worker}", block_seconds=BLOCK_MS / 1000,
                                     connect_timeout=connect_timeout)
        # (generation, newest stream id), asked on the broker's fast-failing pool: this connection's
        # long timeout is for the blocking read, and must not hold a starting worker for seconds.
        self._head = head
        self.generation: str | None = None
        self._generation_seen = b""  # the generation of the last entry delivered, as read
        self.last_id = "0-0"
        self.canary_id = "0-0"
        self.connected = False
        self.canary_seen = time.monotonic()
        self.canary_rtt: float | None = None
        self.events_read = 0
        self.reconnects = 0
        self._targets: dict[bytes, Target] = {}
        self._greenlet: gevent.Greenlet | None = None
        self.started = False
        self.linger = linger
        self._flowing_since = 0.0  # when the last read with entries ended

    def start(self) -> None:
        """Find where the stream stands now (so the first subscriber misses nothing), then read on."""
        try:
            self._connect()
        except redis.RedisError as error:
            log.warning("reader of worker %s cannot reach Redis yet: %s", self.worker, error)
        self._greenlet = gevent.spawn(self._run)
        self.started = True

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        disconnect(self.redis)

    def _connect(self) -> None:
        generation, last = self._head()
        if self.generation is None:
            self.last_id = last
        elif generation != self.generation or stream_id_tuple(last) < stream_id_tuple(self.last_id):
            resume = self._resume_point(self.generation, self.last_id)
            log.warning("Redis has stream generation %s (was %s; another server, or restarted): reader of "
                        "worker %s resumes after %s (it had read up to %s)", generation, self.generation,
                        self.worker, resume, self.last_id)
            self.last_id = resume
        self.generation = generation
        self.connected = True
        self.canary_seen = time.monotonic()

    def _resume_point(self, generation: str, last_id: str) -> str:
        """Where to read on in a stream that may lack the newest entries read so far (see the module).

        Entries are in id order and generations only grow along the stream, so the newest entry of
        ``generation`` or older is where that generation's surviving part ends."""
        page_end = "+"
        while True:
            page = self.redis.xrevrange(self.keys.stream, page_end, "-", count=BATCH)
            for raw_id, fields in page:
                if int(fields[b"g"]) < int(generation):
                    return raw_id.decode()
                if fields[b"g"] == generation.encode():
                    entry_id = raw_id.decode()
                    newer = stream_id_tuple(entry_id) >= stream_id_tuple(last_id)
                    return last_id if newer else entry_id
            if len(page) < BATCH:
                return "0-0"  # every entry is of a newer generation: all new
            page_end = "(" + page[-1][0].decode()

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                if not self.connected:
                    self._connect()
                    self.reconnects += 1
                    log.info("reader of worker %s reconnected; resuming after %s", self.worker, self.last_id)
                    failures = 0
                self._read_once()
            except redis.RedisError as error:
                if self.connected:
                    log.warning("reader of worker %s lost Redis: %s", self.worker, error)
                # redis-py has closed the connection; the next command opens a new one.
                self.connected = False
                failures += 1
                cap = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** min(failures, 10))
                gevent.sleep(random.uniform(cap / 2, cap))
            except Exception:  # a bug in one event must not stop delivery to the whole worker
                log.exception("reader of worker %s failed on an event; skipping past it", self.worker)
                gevent.sleep(BACKOFF_FIRST_SECONDS)

    def _read_once(self) -> None:
        canary_key = self.keys.canary(self.worker)
        reply = self.redis.xread({self.keys.stream: self.last_id, canary_key: self.canary_id},
                                 count=BATCH, block=BLOCK_MS)
        read = 0
        for key, entries in reply or ():
            if key.decode() == canary_key:
                self._canary(entries)
            else:
                self._deliver(entries)
                read = len(entries)
        if read and read < BATCH:
            now = time.monotonic()
            flowing = now - self._flowing_since < LINGER_WHEN_SECONDS
            self._flowing_since = now
            if flowing and self.linger:
                gevent.sleep(self.linger)

    def _deliver(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        targets = self._targets
        for raw_id, fields in entries:
            # Advance first: an entry that cannot be delivered is skipped, never read again and again.
            self.last_id = raw_id.decode()
            # A fan-out on a cluster's shard raises its generation without a loss (see .shard_scripts):
            # follow it, so a reconnect compares with the newest generation read, not the first.
            generation = fields[b"g"]
            if generation != self._generation_seen and self.generation is not None:
                self._generation_seen = generation  # parsed only when it changes, not per event
                if int(generation) > int(self.generation):
                    self.generation = generation.decode()
            target = targets.get(fields[b"t"])
            if target is None:
                if len(targets) > 4096:
                    targets.clear()
                target = targets[fields[b"t"]] = decode_target(fields[b"t"])
            self.dispatch(target, entry_frame(raw_id, fields))
            self.events_read += 1

    def _canary(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        now = time.monotonic()
        raw_id, fields = entries[-1]
        self.canary_id = raw_id.decode()
        sent = fields.get(b"t")
        if sent is not None and fields.get(b"p") == str(os.getpid()).encode():
            self.canary_rtt = now - float(sent)
        self.canary_seen = now

    def healthy(self) -> bool:
        if not self.started:
            return False  # start() is finding the stream's head right now
        return self.connected and time.monotonic() - self.canary_seen < CANARY_STALE_SECONDS

    def state(self) -> dict[str, Any]:
        return {
            "reader": "connected" if self.connected else "reconnecting",
            "canary_age_s": round(time.monotonic() - self.canary_seen, 3),
            "canary_rtt_ms": None if self.canary_rtt is None else round(self.canary_rtt * 1000, 2),
            "generation": self.generation,
            "last_id": self.last_id,
            "reconnects": self.reconnects,
        }


def write_canary(client: redis.Redis, keys: Keys, worker: str) -> None:
    """One canary tick for ``worker``'s reader: the send time, read back by the reader."""
    key = keys.canary(worker)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, {"t": repr(time.monotonic()), "p": str(os.getpid())}, maxlen=1, approximate=False)
    pipe.expire(key, 60)
    pipe.execute()
