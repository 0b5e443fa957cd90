"""The Redis broker on a Redis Cluster: the events spread over shards, placed on the masters by client id.

A shard is one stream with its own hash tag (``{pushsvc:<k>}:events``), so the cluster places the shards
over its masters and moves them as slots move. A client id lives on shard ``crc32(id) % shards``; an
event for client ids is stored on the shard(s) of those ids, so each master carries about its share of
the unicast events and of the history. Every shard holds everything its clients get: an event for a group,
a prefix or everyone is stored on every shard, with the same id on each (see :mod:`.fanout`). So one
client's events all come from one stream, in one order, and resume from it exactly.

A worker reads only the shards of the streams it holds (one reader each, started by the first such
stream), and each reader feeds only its shard's connections. Presence, tickets, idempotency and presence
transitions stay under the deployment's own tag, on one master, as with one Redis.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import Any

import gevent.event
import redis

from ...config import ConfigError, Settings
from ...model import Message, Published, Replay, Target
from ...registry import Connection, Registry
from .broker import RedisBroker
from .cluster_url import parse_cluster_url
from .coalesce import Coalesced
from .errors import UNAVAILABLE, unavailable
from .fanout import FanOut, concurrently
from .reader import Reader, write_canary
from .schema import DEFAULT_NAMESPACE, Keys, encode_target, event_id, event_key
from .shard_history import ShardHistory
from .shard_presence import ShardedPresence
from .shard_scripts import HEAD, STORE
from .timeouts import COMMAND_TIMEOUT_SECONDS, CONNECT_TIMEOUT_SECONDS, PUBLISH_DEADLINE_SECONDS

log = logging.getLogger(__name__)


class ShardedBroker(RedisBroker):
    name = "redis-cluster"

    def __init__(self, url: str, *, history_size: int, history_ttl_seconds: float, min_replicas: int = 0,
                 namespace: str = DEFAULT_NAMESPACE, **options: Any):
        if min_replicas:
            raise ConfigError("PUSHSVC_REDIS_MIN_REPLICAS is not supported with redis+cluster:// (a WAIT "
                              "would have to follow every shard's write); leave it at 0")
        self.shards = parse_cluster_url(url).shards
        self.shard_keys = [Keys(f"{namespace}:{k}") for k in range(self.shards)]
        super().__init__(url, history_size=history_size, history_ttl_seconds=history_ttl_seconds,
                         namespace=namespace, follow_failover=True, **options)
        self._store = self.redis.register_script(STORE)
        self._shard_head_script = self.redis.register_script(HEAD)
        self._heads = [Coalesced(lambda k=k: self.shard_head(k)) for k in range(self.shards)]
        self.histories = [ShardHistory(self.redis, keys, ttl_ms=self.ttl_ms) for keys in self.shard_keys]
        self.fanout = FanOut(self.redis, self.keys, self.shard_keys, store=self._store_on,
                             clock=lambda: self.clock.deadline_ms(0))
        self.readers: dict[int, Reader] = {}
        self._reading: dict[int, gevent.event.Event] = {}  # set once the shard's reader took its head

    @classmethod
    def from_settings(cls, settings: Settings) -> ShardedBroker:
        return cls(settings.broker_url, history_size=settings.history_size,
                   history_ttl_seconds=settings.history_ttl_seconds, min_replicas=settings.redis_min_replicas,
                   read_linger_ms=settings.redis_read_linger_ms, presence_ttl=settings.presence_ttl_seconds)

    def _new_presence(self) -> ShardedPresence:  # type: ignore[override]
        return ShardedPresence(self.redis, self.shard_keys, self.worker, self.shard_of, ttl=self.presence_ttl)

    def shard_of(self, client_id: str) -> int:
        return zlib.crc32(client_id.encode("utf-8")) % self.shards

    def shards_for(self, target: Target) -> tuple[int, ...]:
        if target.kind == "to":
            return tuple(sorted({self.shard_of(client_id) for client_id in target.values}))
        return tuple(range(self.shards))

    # -- streams -----------------------------------------------------------------------------------

    def on_subscribe(self, conn: Connection) -> Any:
        """Read the connection's shard in this worker, and return the shard's head (see the base)."""
        shard = conn.partition = self.shard_of(conn.client_id)
        self._serve()
        try:
            self._shard_reader(shard)
            generation, last = self._heads[shard]()
        except UNAVAILABLE as error:
            log.info("head of shard %s unknown for %s: %s", shard, conn.client_id, error)
            raise unavailable(error) from error
        return event_key(generation, last)

    def shard_head(self, shard: int) -> tuple[str, str]:
        keys = self.shard_keys[shard]
        generation, last = self._shard_head_script(keys=_shard_keys(keys))
        return generation.decode(), last.decode()

    def head(self) -> tuple[str, str]:  # the base asks for it only to start its one reader
        return self.shard_head(0)

    def _start_reading(self, registry: Registry) -> None:
        """Readers start per shard, with the first stream of the shard (:meth:`_shard_reader`)."""

    def _shard_reader(self, shard: int) -> None:
        """Start reading ``shard`` in this worker, once. A stream of the shard takes its head only after
        the reader took its own (as the base waits for its reader): else an event between the two heads
        would be after the stream's and before the reader's, read by nobody."""
        if self.registry is None:
            return
        started = self._reading.get(shard)
        if started is not None:
            started.wait(CONNECT_TIMEOUT_SECONDS + COMMAND_TIMEOUT_SECONDS)
            return
        started = self._reading[shard] = gevent.event.Event()
        registry = self.registry

        def dispatch(target: Target, frame: Any) -> int:
            return registry.dispatch(target, frame, shard)

        reader = Reader(self.url, self.shard_keys[shard], self.worker, dispatch,
                        head=lambda: self.shard_head(shard), connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        linger=self.linger)
        try:
            reader.start()
        finally:
            self.readers[shard] = reader
            started.set()
        log.info("worker %s reads shard %s", self.worker, shard)

    def _stop_reading(self) -> bool:
        readers, self.readers, self._reading = list(self.readers.values()), {}, {}
        for reader in readers:
            reader.stop()
        return self._serving

    def _write_canaries(self) -> None:
        for shard in list(self.readers):
            write_canary(self.redis, self.shard_keys[shard], self.worker)

    def health(self) -> dict[str, Any]:
        self._serve()
        readers = dict(self.readers)
        # Only readers that have started (a shard's first stream waits for its own).
        unhealthy = sorted(shard for shard, reader in readers.items() if not reader.healthy())
        return {"ok": not unhealthy and self._canary_ok, "worker": self.worker, "shards": self.shards,
                "reading": sorted(readers), "unhealthy": unhealthy,
                "reader": "connected" if not unhealthy else "reconnecting"}

    def replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        return self.histories[self.shard_of(client_id)].replay(last_id, client_id, groups)

    # -- publish -------------------------------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[Published]:
        """Store each message on its shards, counting its audience there on the way: in one script call
        per shard when every message goes to one shard, through the fan-out otherwise."""
        if not messages:
            return []
        registry = self.registry
        local = [registry.count(m.target) if registry is not None else 0 for m in messages]
        plan = [self.shards_for(m.target) for m in messages]
        deadline = self.clock.deadline_ms(PUBLISH_DEADLINE_SECONDS)
        try:
            if any(len(shards) > 1 for shards in plan):
                published = self.fanout.publish(messages, plan, deadline)
            else:
                published = self._publish_unicast(messages, plan, deadline)
        except UNAVAILABLE as error:
            raise unavailable(error) from error
        except redis.ResponseError as error:
            if not FanOut.refused(error):
                raise
            raise unavailable(error) from error
        return [Published(eid, online + local[i]) for i, (eid, online) in enumerate(published)]

    def _publish_unicast(self, messages: Sequence[Message], plan: list[tuple[int, ...]],
                         deadline: int) -> list[tuple[str, int]]:
        by_shard: dict[int, list[int]] = {}
        for index, shards in enumerate(plan):
            by_shard.setdefault(shards[0], []).append(index)
        published: list[tuple[str, int]] = [("", 0)] * len(messages)

        def store(shard: int) -> None:
            indexes = by_shard[shard]
            generation, stored = self._store_on(shard, [messages[i] for i in indexes], deadline,
                                                generation="", first=None)
            for index, (stream_id, online) in zip(indexes, stored, strict=True):
                published[index] = (event_id(generation, stream_id, close=messages[index].close), online)

        concurrently(store, list(by_shard))
        return published

    def _store_on(self, shard: int, messages: Sequence[Message], deadline: int, *, generation: str,
                  first: Sequence[str] | None) -> tuple[str, list[tuple[str, int]]]:
        """Store ``messages`` on one shard in one script call: with ``first`` (an id per message) and the
        fan-out's ``generation``, or with the shard's next ids and its own generation. Returns the
        generation, and each message's stream id and audience on the shard's other workers."""
        keys = self.shard_keys[shard]
        args: list[Any] = [self.history_size, self.ttl_ms, deadline, generation, keys.worker_prefix,
                           self.worker]
        for index, message in enumerate(messages):
            args += (encode_target(message.target), message.body, "1" if message.close else "",
                     first[index] if first is not None else "")
        reply = self._store(keys=[*_shard_keys(keys), keys.workers], args=args)
        return reply[0].decode(), [(reply[i].decode(), reply[i + 1]) for i in range(1, len(reply), 2)]


def _shard_keys(keys: Keys) -> list[str]:
    return [keys.stream, keys.generation, keys.epoch, keys.since]

