"""Presence on a Redis Cluster: each worker writes its share of each shard under that shard's tag.

A client lives on one shard, so the presence of a shard's clients can sit beside the shard's stream: the
publish script that stores an event on a shard counts its audience there, in the same step (as one Redis
does), and the count of an event on several shards is the sum of theirs. No master counts for all.
``/sse/clients`` adds up every shard's shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis

from ...model import ClientInfo, Target
from ...registry import Connection, Registry
from .fanout import concurrently
from .presence import Presence, merge_clients
from .schema import Keys

Listener = Callable[[str, Connection], None]


class PartitionView:
    """What :class:`.presence.Presence` reads of a registry, for the connections of one shard only."""

    def __init__(self, registry: Registry, partition: int):
        self.registry = registry
        self.partition = partition
        self.listeners: list[Listener] = []

    def __len__(self) -> int:
        return len(self.registry.in_partition(self.partition))  # type: ignore[arg-type]

    def client(self, client_id: str) -> ClientInfo | None:
        return self.registry.client(client_id)  # every stream of a client id is on the id's shard

    def count(self, target: Target) -> int:
        return sum(1 for conn in self.registry.select(target) if conn.partition == self.partition)

    def clients(self) -> dict[str, ClientInfo]:
        infos: dict[str, ClientInfo] = {}
        for conn in list(self.registry.in_partition(self.partition)):
            info = infos.get(conn.client_id)
            if info is None:
                info = infos[conn.client_id] = ClientInfo(conn.client_id)
            info.connections += 1
            info.groups.update(conn.groups)
        return infos


class ShardedPresence:
    """One :class:`.presence.Presence` per shard, fed the changes of that shard's connections."""

    def __init__(self, client: redis.Redis, shard_keys: Sequence[Keys], worker: str,
                 shard_of: Callable[[str], int], *, ttl: float):
        self.ttl = ttl
        self.shards = [Presence(client, keys, worker, ttl_seconds=ttl) for keys in shard_keys]
        self.shard_of = shard_of
        self.registry: Registry | None = None
        self._views: list[PartitionView] = []

    @property
    def needs_sync(self) -> bool:
        return any(presence.needs_sync for presence in self.shards)

    def attach(self, registry: Registry) -> None:
        if self.registry is registry:
            return
        self.detach()
        self.registry = registry
        self._views = [PartitionView(registry, k) for k in range(len(self.shards))]
        for presence, view in zip(self.shards, self._views, strict=True):
            presence.attach(view)  # type: ignore[arg-type]
        registry.listeners.append(self._forward)

    def detach(self) -> None:
        if self.registry is not None and self._forward in self.registry.listeners:
            self.registry.listeners.remove(self._forward)
        for presence in self.shards:
            presence.detach()
        self.registry = None

    def _forward(self, what: str, conn: Connection) -> None:
        if conn.partition is not None and conn.partition < len(self._views):
            for listener in list(self._views[conn.partition].listeners):
                listener(what, conn)

    def written(self, timeout: float) -> bool:
        return all(presence.written(timeout) for presence in self.shards)

    def refresh(self) -> None:
        concurrently(lambda presence: presence.refresh(), self.shards)

    def withdraw(self) -> None:
        concurrently(lambda presence: presence.withdraw(), self.shards)

    def clients(self) -> dict[str, ClientInfo]:
        merged: dict[str, ClientInfo] = self.registry.clients() if self.registry is not None else {}
        for others in concurrently(lambda presence: presence.others(), self.shards):
            merge_clients(merged, others)
        return dict(sorted(merged.items()))

    def client(self, client_id: str) -> ClientInfo | None:
        return self.shards[self.shard_of(client_id)].client(client_id)
