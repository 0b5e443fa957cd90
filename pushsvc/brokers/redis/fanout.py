"""One event on many shards with one id: the fan-out of a Redis Cluster's sharded broker.

An event for a group, a prefix, everyone, or client ids on several shards is stored on every shard it
may reach, and must carry the same id on each (the publish answers one id, and every stream shows it).
Shards live on different masters, so no script can write them together. Instead, fan-outs take turns
(a lock under the deployment's tag, held for a few round trips), and each one:

1. takes the lock and ids ahead of every clock: milliseconds ``LEAD_MS`` past the lock master's time,
   and above every id handed out before (:data:`.shard_scripts.FAN_BEGIN`);
2. reads the generation of each shard it reaches, and takes the largest;
3. stores the event on every shard, with that generation and its id (each shard raises its generation
   to it, without losing anything: :mod:`.shard_scripts`);
4. lets go of the lock.

Events to one shard do not wait for the lock: their ids are Redis's own (``*``), the master's clock,
which is behind the fan-out's ids by ``LEAD_MS`` until it catches up; an event stored after a fan-out
gets an id after it. So each shard's ids increase in publish order, and one client's events all come
from its shard. This holds while the masters' clocks differ by much less than ``LEAD_MS`` (NTP).

A master that fails while a fan-out stores on it refuses the publish (503) after other shards have stored
the event: their clients get it. The error says so.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import gevent
import redis

from ...model import Message
from .schema import Keys, event_id
from .scripts import LATE
from .shard_scripts import BEHIND, FAN_BEGIN, FAN_END, HEAD, STALE

log = logging.getLogger(__name__)

LEAD_MS = 1000
# The lock outlives any fan-out that keeps its deadline; a holder that died frees it after this.
LOCK_TTL_MS = 2000
LOCK_RETRY_SECONDS = 0.002

T = TypeVar("T")


class FanOut:
    """Stores messages on several shards under one id each; ``store`` writes one shard (see .sharded)."""

    def __init__(self, client: redis.Redis, keys: Keys, shard_keys: Sequence[Keys], *,
                 store: Callable[..., tuple[str, list[tuple[str, int]]]], clock: Callable[[], int]):
        self.keys = keys
        self.shard_keys = shard_keys
        self._store = store
        self._now_ms = clock
        self._begin = client.register_script(FAN_BEGIN)
        self._end = client.register_script(FAN_END)
        self._head = client.register_script(HEAD)

    @staticmethod
    def refused(error: redis.ResponseError) -> bool:
        """A refusal that stored nothing on that shard (late, or a generation or id moved under it)."""
        return any(code in str(error) for code in (LATE, STALE, BEHIND))

    def publish(self, messages: Sequence[Message], plan: Sequence[tuple[int, ...]],
                deadline: int) -> list[tuple[str, int]]:
        """Id and audience (on other workers) of each message, stored on the shards ``plan`` names for it,
        in order on each."""
        token = secrets.token_hex(8)
        first = self._lock(token, len(messages), deadline)
        try:
            by_shard: dict[int, list[int]] = {}  # the messages of each shard, in order
            for index, targets in enumerate(plan):
                for shard in targets:
                    by_shard.setdefault(shard, []).append(index)
            shards = sorted(by_shard)
            generation = str(max(int(g) for g in concurrently(self._generation, shards)))
            ids = [f"{first + index}-0" for index in range(len(messages))]
            online = [0] * len(messages)
            stored: list[int] = []

            def store(shard: int) -> None:
                indexes = by_shard[shard]
                _, counted = self._store(shard, [messages[i] for i in indexes], deadline,
                                         generation=generation, first=[ids[i] for i in indexes])
                for index, (_, audience) in zip(indexes, counted, strict=True):
                    online[index] += audience
                stored.append(shard)

            try:
                concurrently(store, shards)
            except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
                if stored:
                    log.warning("fan-out %s stored on shards %s of %s only: %s", ids[0], sorted(stored),
                                shards, error)
                    raise redis.ConnectionError(f"{error} (the event was stored on {len(stored)} of "
                                                f"{len(shards)} shards; their clients get it)") from error
                raise
        finally:
            self._end(keys=[self.keys.fan_lock], args=[token])
        return [(event_id(generation, eid, close=m.close), online[i])
                for i, (eid, m) in enumerate(zip(ids, messages, strict=True))]

    def _lock(self, token: str, count: int, deadline: int) -> int:
        while True:
            reply = self._begin(keys=[self.keys.fan_lock, self.keys.fan_last],
                                args=[token, LOCK_TTL_MS, count, LEAD_MS])
            if reply[0] == 1:
                return int(reply[1])
            if self._now_ms() >= deadline:
                raise redis.ConnectionError("another fan-out held the lock until the publish's deadline")
            gevent.sleep(LOCK_RETRY_SECONDS)

    def _generation(self, shard: int) -> str:
        keys = self.shard_keys[shard]
        generation, _ = self._head(keys=[keys.stream, keys.generation, keys.epoch, keys.since])
        return generation.decode()


def concurrently(fn: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    """``fn(item)`` for every item, each in a greenlet (one round trip for all, where sockets cooperate),
    in order; the first error is raised once all have ended."""
    items = list(items)
    if len(items) == 1:
        return [fn(items[0])]
    greenlets = [gevent.spawn(fn, item) for item in items]
    gevent.joinall(greenlets)
    for greenlet in greenlets:
        if greenlet.exception is not None:
            raise greenlet.exception
    return [greenlet.value for greenlet in greenlets]
