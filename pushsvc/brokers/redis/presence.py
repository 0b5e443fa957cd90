"""Presence across workers: each worker keeps its own clients in Redis hashes that expire unless refreshed.

A worker writes only its own share (one hash of client ids, one of group counts and its total), a few
milliseconds after a connect or disconnect, and refreshes their TTL every few seconds. Readers add up
every live worker's share, and use this worker's registry directly for its own (always exact). A worker
that dies without a word is gone from every count once its hashes expire.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.lock
import redis

from ...config import DEFAULT_PRESENCE_TTL_SECONDS
from ...model import ClientInfo, Target
from ...registry import Connection, Registry
from .schema import TOTAL_FIELD, Keys, encode_presence, merge_presence
from .scripts import PRESENCE

log = logging.getLogger(__name__)


def refresh_seconds(ttl_seconds: float) -> float:
    """How often a worker refreshes what expires after ``ttl_seconds``: a third of it, so a worker that
    misses one refresh (a stall, a slow Redis) is not yet taken for dead."""
    return ttl_seconds / 3


F = TypeVar("F", bound=Callable[..., Any])


def _one_at_a_time(method: F) -> F:
    """Writes of a worker's share run one at a time: a full rewrite (the keeper's refresh) and a change
    written meanwhile (a connect's flush) could land in either order, and the older picture would then
    overwrite the newer one until that client changed again."""
    @functools.wraps(method)
    def run(self: Presence, *args: Any, **kwargs: Any) -> Any:
        with self._writing:
            return method(self, *args, **kwargs)
    return run  # type: ignore[return-value]


class Presence:
    """This worker's share of presence in Redis, and the whole service's view of it."""

    def __init__(self, client: redis.Redis, keys: Keys, worker: str, *,
                 ttl_seconds: float = DEFAULT_PRESENCE_TTL_SECONDS):
        self.redis = client
        self.keys = keys
        self.worker = worker
        # Stale entries of a killed worker disappear after this (PUSHSVC_PRESENCE_TTL_SECONDS).
        self.ttl = ttl_seconds
        self.ttl_ms = int(ttl_seconds * 1000)
        self.registry: Registry | None = None
        self._dirty_clients: set[str] = set()
        self._dirty_groups: set[str] = set()
        self._flush_pending = False
        # Changes seen and changes written, counted, so a stream can wait until its own is in Redis.
        self._changes = 0
        self._written = 0
        self._progress = gevent.event.Event()
        # Rewrite everything at the next chance (first write, or after a failed one or a lost Redis).
        self._full = True
        self._writing = gevent.lock.RLock()
        self._script = client.register_script(PRESENCE)

    @property
    def needs_sync(self) -> bool:
        return self._full and self.registry is not None

    def attach(self, registry: Registry) -> None:
        """Follow the connects and disconnects of this worker's ``registry`` (once, however often asked)."""
        if self.registry is registry:
            return
        self.detach()
        self.registry = registry
        self._full = True
        registry.listeners.append(self._on_change)

    def detach(self) -> None:
        """Stop following the registry (its share in Redis is left to :meth:`withdraw` or to expiry)."""
        if self.registry is not None and self._on_change in self.registry.listeners:
            self.registry.listeners.remove(self._on_change)
        self.registry = None

    def _on_change(self, what: str, conn: Connection) -> None:
        self._changes += 1
        self._dirty_clients.add(conn.client_id)
        self._dirty_groups.update(conn.groups)
        if not self._flush_pending:
            self._flush_pending = True
            gevent.spawn(self._flush_quietly)

    def _flush_quietly(self) -> None:
        # Changes made while a write is on its way go out in the next one: one write per round trip
        # however many clients connect at once, and at most one round trip late.
        try:
            while self._dirty_clients or self._dirty_groups or self.needs_sync:
                upto = self._changes
                self.flush()
                self._written = upto
                self._progress.set()
                self._progress = gevent.event.Event()
        except redis.RedisError as error:
            log.warning("presence of worker %s not written (%s); retrying at the next refresh",
                        self.worker, error)
        finally:
            self._flush_pending = False

    def written(self, timeout: float) -> bool:
        """Wait (``timeout`` seconds at most) until every change seen so far is in Redis, so that any
        worker's count includes a stream that has just registered."""
        target = self._changes
        deadline = time.monotonic() + timeout
        while self._written < target:
            left = deadline - time.monotonic()
            if left <= 0 or not self._progress.wait(left):
                return False
        return True

    # -- writing this worker's share ------------------------------------------------------------------

    @_one_at_a_time
    def flush(self) -> None:
        """Write the changes since the last flush (everything, when a full rewrite is due)."""
        registry = self.registry
        if registry is None:
            return
        if self._full:
            self.sync()
            return
        clients, groups = self._dirty_clients, self._dirty_groups
        self._dirty_clients, self._dirty_groups = set(), set()
        if not clients and not groups:
            return
        ckey, gkey = self.keys.worker_clients(self.worker), self.keys.worker_groups(self.worker)
        pipe = self.redis.pipeline(transaction=True)
        for client_id in clients:
            info = registry.client(client_id)
            if info is None:
                pipe.hdel(ckey, client_id)
            else:
                pipe.hset(ckey, client_id, encode_presence(info))
        for group in groups:
            count = registry.count(Target.group(group))
            if count:
                pipe.hset(gkey, group, count)
            else:
                pipe.hdel(gkey, group)
        pipe.hset(gkey, TOTAL_FIELD, len(registry))
        self._finish(pipe)
        self._execute(pipe)

    @_one_at_a_time
    def sync(self) -> None:
        """Replace this worker's share with the registry's whole state, atomically."""
        registry = self.registry
        if registry is None:
            return
        self._full = False
        self._dirty_clients.clear()
        self._dirty_groups.clear()
        ckey, gkey = self.keys.worker_clients(self.worker), self.keys.worker_groups(self.worker)
        clients = registry.clients()
        groups: dict[str, int] = {TOTAL_FIELD: len(registry)}
        for info in clients.values():
            for group in info.groups:
                groups[group] = 0
        for group in groups:
            if group != TOTAL_FIELD:
                groups[group] = registry.count(Target.group(group))
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(ckey, gkey)
        if clients:
            pipe.hset(ckey, mapping={cid: encode_presence(info) for cid, info in clients.items()})
        pipe.hset(gkey, mapping=groups)
        self._finish(pipe)
        self._execute(pipe)

    @_one_at_a_time
    def refresh(self) -> None:
        """Keep this worker's share alive; rewrite it when Redis lost it (restarted empty)."""
        if self.registry is None:
            return
        if self._full:
            self.sync()
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.pexpire(self.keys.worker_groups(self.worker), self.ttl_ms)
        pipe.pexpire(self.keys.worker_clients(self.worker), self.ttl_ms)
        pipe.sadd(self.keys.workers, self.worker)
        alive = self._execute(pipe)[0]
        if not alive:
            log.info("presence of worker %s was gone from Redis; rewriting it", self.worker)
            self.sync()

    @_one_at_a_time
    def withdraw(self) -> None:
        """Remove this worker's share (on a clean stop)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.worker_clients(self.worker), self.keys.worker_groups(self.worker))
        pipe.srem(self.keys.workers, self.worker)
        pipe.execute()

    def _finish(self, pipe: Any) -> None:
        pipe.pexpire(self.keys.worker_clients(self.worker), self.ttl_ms)
        pipe.pexpire(self.keys.worker_groups(self.worker), self.ttl_ms)
        pipe.sadd(self.keys.workers, self.worker)

    def _execute(self, pipe: Any) -> list[Any]:
        try:
            return pipe.execute()
        except Exception:  # whatever it was, the dirty sets are gone: rewrite everything next time
            self._full = True
            raise

    # -- reading the whole service ---------------------------------------------------------------------

    def clients(self) -> dict[str, ClientInfo]:
        """Every client id with an open stream anywhere, sorted by id."""
        merged = self.registry.clients() if self.registry is not None else {}
        merge_clients(merged, self.others())
        return dict(sorted(merged.items()))

    def client(self, client_id: str) -> ClientInfo | None:
        merged: dict[str, ClientInfo] = {}
        local = self.registry.client(client_id) if self.registry is not None else None
        if local is not None:
            merged[client_id] = local
        merge_clients(merged, self.others(client_id))
        return merged.get(client_id)

    def others(self, client_id: str | None = None) -> dict[str, ClientInfo]:
        """The clients of the other live workers (of ``client_id`` only, if given)."""
        args = [self.keys.worker_prefix, self.worker] + ([client_id] if client_id is not None else [])
        pairs = self._script(keys=[self.keys.workers], args=args)
        infos: dict[str, ClientInfo] = {}
        for i in range(0, len(pairs), 2):
            merge_presence(infos, pairs[i].decode("utf-8"), pairs[i + 1])
        return infos


def merge_clients(into: dict[str, ClientInfo], more: dict[str, ClientInfo]) -> None:
    """Add the entries of ``more`` to ``into``: connections add up, groups join."""
    for client_id, info in more.items():
        have = into.get(client_id)
        if have is None:
            into[client_id] = info
        else:
            have.connections += info.connections
            have.groups.update(info.groups)
