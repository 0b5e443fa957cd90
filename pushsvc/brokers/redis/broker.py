"""The Redis broker: many workers on many machines behave as one service.

One Redis Stream is both the bus and the replay history (``XADD … MAXLEN ~ history_size``, trimmed by
age too). Each worker that serves streams runs ONE reader greenlet (:mod:`.reader`) that fans every
event out to its local registry, so a worker holds a small constant number of Redis connections (the
reader's, and a small pool for publish, presence and replay), never one per subscriber.

A process that serves no streams publishes with one script call and starts nothing. Event ids are
``<generation>-<stream id>`` (:mod:`.schema`). :mod:`.sharded` extends it to a Redis Cluster.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import redis
from gevent.monkey import is_module_patched
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...config import DEFAULT_PRESENCE_TTL_SECONDS, Settings
from ...model import ClientInfo, Message, Published, Replay
from ...registry import Connection, Registry
from ...transitions import Tracking
from ..base import Broker
from .check import check_url
from .clock import RedisClock
from .coalesce import Coalesced
from .connect import connect, disconnect, is_sentinel, server_address
from .errors import UNAVAILABLE, unavailable
from .history import RedisHistory
from .idempotency import RedisIdempotency
from .lifecycle import RedisTracking
from .presence import Presence, refresh_seconds
from .reader import CANARY_INTERVAL_SECONDS, Reader, write_canary
from .replicas import WAIT_TIMEOUT_MS, publish_replicated
from .schema import DEFAULT_NAMESPACE, Keys, encode_target, event_id, event_key
from .scripts import HEAD, LATE, NO_REPLICAS, PUBLISH
from .tickets import RedisTickets
from .timeouts import (
    COMMAND_TIMEOUT_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    POOL_SIZE,
    POOL_WAIT_SECONDS,
    PUBLISH_DEADLINE_SECONDS,
)

log = logging.getLogger(__name__)


class RedisBroker(Broker):
    name = "redis"
    shared = True

    def __init__(self, url: str, *, history_size: int, history_ttl_seconds: float,
                 namespace: str = DEFAULT_NAMESPACE, min_replicas: int = 0, read_linger_ms: int = 0,
                 follow_failover: bool | None = None, presence_ttl: float = DEFAULT_PRESENCE_TTL_SECONDS):
        self.url = url
        self.keys = Keys(namespace)
        self.history_size = history_size
        self.ttl_ms = int(history_ttl_seconds * 1000)
        self.min_replicas = min_replicas
        self.linger = read_linger_ms / 1000
        check_url(url)
        # A new generation whenever another server holds the stream: behind Sentinel (see .scripts).
        follow = is_sentinel(url) if follow_failover is None else follow_failover
        self.follow = "1" if follow else ""
        # No retries: a publish script that ran but whose answer was lost must not run twice. The pool
        # already replaces a connection found closed (Redis restarted) before using it.
        self.redis = connect(
            url, blocking=True, max_connections=POOL_SIZE, timeout=POOL_WAIT_SECONDS,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, socket_timeout=COMMAND_TIMEOUT_SECONDS,
            socket_keepalive=True, retry=Retry(NoBackoff(), 0))
        self.tickets = RedisTickets(self.redis, self.keys)
        self.idempotency = RedisIdempotency(self.redis, self.keys)
        # Measured again whenever the pool finds another server (a failover): its clock may differ.
        self.clock = RedisClock(self.redis, server=lambda: server_address(self.redis))
        self._publish = self.redis.register_script(PUBLISH)
        self.history = RedisHistory(self.redis, self.keys, ttl_ms=self.ttl_ms, follow=self.follow)
        self._head = self.redis.register_script(HEAD)
        self._shared_head = Coalesced(self.head)  # one head lookup per round trip in a storm
        self.registry: Registry | None = None
        self._pid: int | None = None
        self.worker = ""
        self._new_worker_id()
        self.presence_ttl = presence_ttl
        self.presence = self._new_presence()
        self.reader: Reader | None = None
        self._keeper: gevent.Greenlet | None = None
        self._canary_ok = True
        self._serving = False
        self._started = gevent.event.Event()
        self.tracking: RedisTracking | None = None

    def _new_presence(self) -> Presence:  # one Presence per shard on a cluster
        return Presence(self.redis, self.keys, self.worker, ttl_seconds=self.presence_ttl)

    def track_presence(self, tracking: Tracking) -> None:
        self.tracking = RedisTracking(self.url, self.redis, self.keys, tracking,
                                      connect_timeout=CONNECT_TIMEOUT_SECONDS, ttl_seconds=self.presence.ttl)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisBroker:
        return cls(settings.broker_url, history_size=settings.history_size,
                   history_ttl_seconds=settings.history_ttl_seconds, min_replicas=settings.redis_min_replicas,
                   read_linger_ms=settings.redis_read_linger_ms, presence_ttl=settings.presence_ttl_seconds)

    def _new_worker_id(self) -> None:
        # Host and pid make the presence keys readable; the random part keeps a reused pid apart.
        self._pid = os.getpid()
        self.worker = f"{socket.gethostname()}-{self._pid}-{secrets.token_hex(3)}"

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self, registry: Registry) -> None:
        """Remember the registry to feed; reading starts with the first stream or health check."""
        if self._pid != os.getpid():  # created before a fork: this process is another worker
            self._new_worker_id()
            self.presence = self._new_presence()
            self.reader = None
            self._keeper = None
            self._serving = False
            self._started = gevent.event.Event()
        self.registry = registry

    def on_subscribe(self, conn: Connection) -> Any:
        """Make sure this worker reads the stream, and return the stream's head: live delivery starts after
        it (the reader may still be on its way to older events, such as a close meant for the stream this
        one replaces), as the memory broker's synchronous fan-out does."""
        self._serve()
        try:
            generation, last = self._shared_head()
        except UNAVAILABLE as error:
            log.info("head of the stream unknown for %s: %s", conn.client_id, error)
            raise unavailable(error) from error
        return event_key(generation, last)

    def on_registered(self, conn: Connection) -> None:
        """Wait (a command timeout at most) for the presence write that includes the stream; only where
        sockets cooperate (unpatched, the reader's blocking read would hold the waiting thread)."""
        if is_module_patched("socket") and not self.presence.written(COMMAND_TIMEOUT_SECONDS):
            log.info("presence of %s not written yet in worker %s", conn.client_id, self.worker)

    def head(self) -> tuple[str, str]:
        """The stream's generation and newest stream id, on the fast-failing pool."""
        generation, last = self._head(keys=[self.keys.stream, self.keys.generation, self.keys.epoch],
                                      args=[self.follow])
        return generation.decode(), last.decode()

    def _serve(self) -> None:
        """Start what a worker that serves streams needs: the reader, the canary, presence. Once."""
        # Set before any I/O: during the reader's start() a second call would start a second reader (every
        # event twice). Callers wait for that first start (bounded by the pool's timeouts), so the first
        # subscribes of a fresh worker are served, not refused.
        if self.registry is None:
            return
        if self._serving:
            self._started.wait(CONNECT_TIMEOUT_SECONDS + COMMAND_TIMEOUT_SECONDS)
            return
        self._serving = True
        registry = self.registry
        try:
            self._start_reading(registry)
        finally:
            self._started.set()
        self.presence.attach(registry)
        if self.tracking is not None:
            self.tracking.start(registry, self.worker)
        self._keeper = gevent.spawn(self._keep)
        log.info("redis broker serving in worker %s (pid %s)", self.worker, os.getpid())

    def _start_reading(self, registry: Registry) -> None:
        self.reader = Reader(self.url, self.keys, self.worker, registry.dispatch, head=self.head,
                             connect_timeout=CONNECT_TIMEOUT_SECONDS, linger=self.linger)
        self.reader.start()

    def _stop_reading(self) -> bool:
        """Stop the reader; False when none was running."""
        if self.reader is None:
            return False
        self.reader.stop()
        self.reader = None
        return True

    def _write_canaries(self) -> None:
        write_canary(self.redis, self.keys, self.worker)

    def _keep(self) -> None:
        """Every second a canary tick for the reader; every few seconds the presence refresh."""
        refresh_every = max(1, int(refresh_seconds(self.presence.ttl) / CANARY_INTERVAL_SECONDS))
        tick = 0
        while True:
            try:
                self._write_canaries()
                self.clock.measure()
                if not self._canary_ok:
                    log.info("canary of worker %s written again", self.worker)
                self._canary_ok = True
                if tick % refresh_every == 0 or self.presence.needs_sync:
                    self.presence.refresh()
            except redis.RedisError as error:
                if self._canary_ok:
                    log.warning("canary of worker %s not written: %s", self.worker, error)
                self._canary_ok = False
            tick += 1
            gevent.sleep(CANARY_INTERVAL_SECONDS)

    def stop(self) -> None:
        """Stop reading and withdraw this worker's presence; :meth:`start` and a stream serve again."""
        if self._keeper is not None:
            self._keeper.kill(block=False)
            self._keeper = None
        if self._stop_reading():
            try:
                self.presence.withdraw()
            except redis.RedisError as error:
                log.info("presence of worker %s left to expire: %s", self.worker, error)
        self.presence.detach()
        if self.tracking is not None:
            self.tracking.stop()
        self._serving = False
        self._started = gevent.event.Event()
        disconnect(self.redis)

    def health(self) -> dict[str, Any]:
        """Cached state: no Redis call (the first call in a worker starts the reader)."""
        self._serve()
        if self.reader is None:  # being built right now, in another greenlet
            return {"ok": False, "reader": "starting"}
        return {"ok": self.reader.healthy() and self._canary_ok, "worker": self.worker, **self.reader.state()}

    def probe(self) -> dict[str, Any]:
        """A ``PING`` first (a hung Redis reads as down within a second, in a new worker too), then health."""
        try:
            self.redis.ping()
        except redis.RedisError as error:
            return {"ok": False, "worker": self.worker, "error": f"Redis does not answer: {error}"}
        return self.health()

    # -- publish and replay -------------------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[Published]:
        """Store all messages in one atomic script call, and count each one's audience on the way."""
        if not messages:
            return []
        # This worker's share is counted before the call: once Redis has the events, the reader may
        # deliver a close and end the very streams it was meant to count.
        registry = self.registry
        local = [registry.count(m.target) if registry is not None else 0 for m in messages]
        try:
            early = WAIT_TIMEOUT_MS / 2000 if self.min_replicas else 0.0
            deadline = self.clock.deadline_ms(PUBLISH_DEADLINE_SECONDS - early)
            args: list[Any] = [self.history_size, self.ttl_ms, self.keys.worker_prefix, self.worker, deadline,
                               self.min_replicas, self.follow]
            for message in messages:
                args += (encode_target(message.target), message.body, "1" if message.close else "")
            reply = self._store(args)
        except UNAVAILABLE as error:
            raise unavailable(error) from error
        except redis.ResponseError as error:
            if LATE not in str(error) and NO_REPLICAS not in str(error):
                raise
            raise unavailable(error) from error
        generation = reply[0].decode()
        results = []
        for index, message in enumerate(messages):
            stream_id, remote = reply[1 + 2 * index].decode(), reply[2 + 2 * index]
            eid = event_id(generation, stream_id, close=message.close)
            results.append(Published(eid, remote + local[index]))
        return results

    def _store(self, args: list[Any]) -> Any:
        keys = [self.keys.stream, self.keys.generation, self.keys.workers, self.keys.epoch]
        if not self.min_replicas:
            return self._publish(keys=keys, args=args)
        return publish_replicated(self.redis, self._publish, keys, args, self.min_replicas)

    def replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        return self.history.replay(last_id, client_id, groups)

    # -- presence ----------------------------------------------------------------------------------------

    def clients(self) -> dict[str, ClientInfo]:
        try:
            return self.presence.clients()
        except UNAVAILABLE as error:
            raise unavailable(error) from error

    def client(self, client_id: str) -> ClientInfo | None:
        try:
            return self.presence.client(client_id)
        except UNAVAILABLE as error:
            raise unavailable(error) from error
