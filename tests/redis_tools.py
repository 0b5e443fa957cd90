"""Helpers for the Redis tests: a multi-worker gunicorn on a private Redis, a look at its presence, and
which shard of a Redis Cluster holds an event."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from pushsvc.brokers.redis.schema import parse_event_id

from .helpers import wait_for
from .redis_cluster_env import Cluster
from .servers import Gunicorn, RedisServer
from .sse import RawStream

NAMESPACE = "{pushsvc}"


def cluster_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {"PUSHSVC_BROKER_URL": redis_server.url, "PUSHSVC_HEARTBEAT_SECONDS": "1", **extra}


def fresh_get(server: Gunicorn, path: str, **kw) -> httpx.Response:
    """A GET on a new connection, so any worker may answer it."""
    return httpx.get(server.url(path), timeout=10, **kw)


def fresh_post(server: Gunicorn, path: str, **kw) -> httpx.Response:
    return httpx.post(server.url(path), timeout=10, **kw)


def live_workers(redis_url: str) -> set[str]:
    r = redis.Redis.from_url(redis_url)
    try:
        return {w.decode() for w in r.smembers(f"{NAMESPACE}:workers")
                if r.exists(f"{NAMESPACE}:w:".encode() + w + b":g")}
    finally:
        r.close()


def wait_all_workers(server: Gunicorn, redis_url: str, timeout: float = 20) -> None:
    """Knock until every worker has booted and serves (connections would all go to the first one)."""
    def ready() -> bool:
        fresh_get(server, "/healthz")
        return len(live_workers(redis_url)) >= server.workers
    assert wait_for(ready, timeout, interval=0.2), f"not all workers came up:\n{server.output()[-2000:]}"


def holders(redis_url: str, client_id: str, namespace: str = NAMESPACE) -> dict[int, int]:
    """Worker pid -> open streams of ``client_id`` there, as that worker wrote it into Redis."""
    r = redis.Redis.from_url(redis_url)
    try:
        found = {}
        for worker in r.smembers(f"{namespace}:workers"):
            entry = r.hget(f"{namespace}:w:".encode() + worker + b":c", client_id)
            if entry is not None:
                found[int(worker.decode().split("-")[-2])] = int(entry.split()[0])
        return found
    finally:
        r.close()


def workers_holding(redis_url: str, client_ids: list[str]) -> set[int]:
    pids: set[int] = set()
    for client_id in client_ids:
        pids.update(holders(redis_url, client_id))
    return pids


def workers_holding_on(cluster: Cluster, client_ids: list[str], shards: int) -> set[int]:
    """As :func:`workers_holding`, on a Redis Cluster: each client's presence is under its shard's tag."""
    pids: set[int] = set()
    for client_id in client_ids:
        namespace = f"{{pushsvc:{zlib.crc32(client_id.encode()) % shards}}}"
        pids.update(holders(cluster.master_for_key(namespace).url, client_id, namespace))
    return pids


def shard_of(cluster: Cluster, event_id: str, client_id: str) -> str | None:
    """The shard stream holding the event ``event_id`` addressed to ``client_id`` (a stream id alone may
    be in several shards: each shard's Redis numbers its own entries)."""
    parsed = parse_event_id(event_id)
    assert parsed is not None, event_id
    generation, entry = parsed
    return cluster.stream_holding(entry, "*:events", lambda fields: fields[b"g"].decode() == generation
                                  and client_id.encode() in fields[b"t"].split(b"\n"))


class Streams:
    """Raw streams against one server; all closed at the end, and then the service must show none."""

    def __init__(self, server: Gunicorn):
        self.server = server
        self.opened: list[RawStream] = []

    def raw(self, path: str, headers: dict[str, str] | None = None) -> RawStream:
        stream = RawStream(self.server.port, path, headers)
        self.opened.append(stream)
        return stream

    def close_all(self) -> None:
        for stream in self.opened:
            stream.close()

    def on_every_worker(self, client_id: str, redis_url: str, *, rounds: int = 10) -> list[RawStream]:
        """Open streams of ``client_id`` until every worker holds at least one.

        They are opened several at once: one after the other, the worker that is awake takes them all.
        """
        opened: list[RawStream] = []
        for _ in range(rounds):
            with ThreadPoolExecutor(6) as pool:
                batch = list(pool.map(lambda _: self.raw(f"/sse/subscribe/{client_id}"), range(6)))
            for stream in batch:
                assert stream.read_until(b"retry:")
            opened += batch
            count = len(opened)
            assert wait_for(lambda: sum(holders(redis_url, client_id).values()) == count, 10)  # noqa: B023
            if len(holders(redis_url, client_id)) >= self.server.workers:
                return opened
        raise AssertionError(f"streams of {client_id} never reached every worker")

    def one_on_worker(self, prefix: str, pid: int, redis_url: str, *, rounds: int = 10) -> str:
        """Open streams of new ids ``<prefix>-<n>``, several at once, until worker ``pid`` holds one;
        the id it holds."""
        for round_ in range(rounds):
            ids = [f"{prefix}-{round_}-{i}" for i in range(6)]
            with ThreadPoolExecutor(6) as pool:
                batch = list(pool.map(lambda cid: self.raw(f"/sse/subscribe/{cid}"), ids))
            for stream in batch:
                assert stream.read_until(b"retry:")
            assert wait_for(lambda: all(holders(redis_url, cid) for cid in ids), 10)  # noqa: B023
            for cid in ids:
                if pid in holders(redis_url, cid):
                    return cid
        raise AssertionError(f"no stream of {prefix}-* reached worker {pid}")


@contextlib.contextmanager
def streams_on(server: Gunicorn) -> Iterator[Streams]:
    streams = Streams(server)
    try:
        yield streams
    finally:
        streams.close_all()
    assert wait_for(lambda: fresh_get(server, "/sse/clients").json()["connections"] == 0, 20), \
        "streams leaked past the test"
