"""Shared fixtures: real servers, real clients, and a check that no stream outlives its test."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator

import httpx
import pytest

from .servers import Gunicorn, RedisServer
from .sse import Listener, RawStream

BROKERS = ["memory", "redis"]


@pytest.fixture(scope="module", params=BROKERS)
def server(request) -> Iterator[Gunicorn]:
    """The service under test, once per broker, shared by a test module (heartbeat 1 s).

    ``memory``: one gevent worker with the embedded broker. ``redis``: two gevent workers sharing a
    private redis-server, so every behaviour test also proves the workers act as one service.
    """
    env = {"PUSHSVC_HEARTBEAT_SECONDS": "1"}
    if request.param == "memory":
        with Gunicorn(env=env) as gunicorn:
            yield gunicorn
        return
    if importlib.util.find_spec("pushsvc.redis_broker") is None:
        pytest.skip("the Redis broker (pushsvc.redis_broker) is not part of this tree")
    redis = RedisServer().start()
    try:
        with Gunicorn(workers=2, env={**env, "PUSHSVC_BROKER_URL": redis.url}) as gunicorn:
            gunicorn.broker = "redis"
            yield gunicorn
    finally:
        redis.cleanup()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port for one test module (never the one on 6379)."""
    redis = RedisServer().start()
    try:
        yield redis
    finally:
        redis.cleanup()


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


def connections(server: Gunicorn) -> int:
    return httpx.get(server.url("/sse/clients"), timeout=5).json()["connections"]


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
