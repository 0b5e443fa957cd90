"""Shared fixtures: real servers, real clients, and a check that no stream outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .helpers import BROKERS, connections, wait_for
from .redis_cluster_env import Cluster, started_cluster
from .redis_tools import cluster_env, wait_all_workers
from .servers import Gunicorn, RedisServer, service
from .sse import Listener, RawStream


@pytest.fixture(scope="module", params=BROKERS)
def server(request) -> Iterator[Gunicorn]:
    """The service under test, once per broker, shared by a test module (heartbeat 1 s).

    ``memory``: one gevent worker with the embedded broker. ``redis``: two gevent workers sharing a
    private redis-server, so every behaviour test also proves the workers act as one service.
    """
    with service(request.param, {"PUSHSVC_HEARTBEAT_SECONDS": "1"}) as gunicorn:
        yield gunicorn


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port for one test module (never the one on 6379)."""
    redis = RedisServer().start()
    try:
        yield redis
    finally:
        redis.cleanup()


@pytest.fixture(scope="module")
def cluster_settings() -> dict[str, str]:
    """``PUSHSVC_*`` settings of ``cluster`` besides the broker and heartbeat; a module may override it."""
    return {}


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, cluster_settings: dict[str, str]) -> Iterator[Gunicorn]:
    """Two gevent workers on the module's private Redis, both serving before the first test."""
    with Gunicorn(workers=2, env=cluster_env(redis_server, **cluster_settings)) as gunicorn:
        wait_all_workers(gunicorn, redis_server.url)
        yield gunicorn


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[Cluster]:
    """A private Redis Cluster (three masters, a replica each) for one test module; see
    ``tests/redis_cluster_env.py`` for what it can do (fail over, kill a master, move a slot)."""
    with started_cluster() as cluster:
        yield cluster


@pytest.fixture
def client(server: Gunicorn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=10) as http:
        yield http


@pytest.fixture
def streams(server: Gunicorn) -> Iterator[list]:
    """Open streams through ``streams.raw(path)`` / ``streams.listen(path)``; all closed after the test,
    and then the server must show no connection left."""
    opened: list = []

    class Streams(list):
        def raw(self, path: str, headers: dict[str, str] | None = None, **kw) -> RawStream:
            s = RawStream(server.port, path, headers, **kw)
            opened.append(s)
            return s

        def listen(self, path: str, headers: dict[str, str] | None = None) -> Listener:
            s = Listener(server.base, path, headers)
            opened.append(s)
            return s

    yield Streams()
    for s in opened:
        s.close()
    assert wait_for(lambda: connections(server) == 0, 10), "streams leaked past the test"

