"""A connect storm on a worker behind Redis: every stream is admitted, none is turned away as busy.

Each subscribe asks Redis for the stream's head; asked one call per subscribe, a storm took every
connection of the worker's small fast-failing pool and the rest were refused softly (``event: busy``).
The lookups of a storm now share one call per round trip (pushsvc/brokers/redis/coalesce.py).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator

import gevent
import pytest

from pushsvc.brokers.redis.coalesce import Coalesced

from .helpers import wait_for
from .redis_tools import cluster_env, fresh_get
from .servers import Gunicorn, RedisServer

STORM = 600


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer) -> Iterator[Gunicorn]:
    with Gunicorn(workers=1, env=cluster_env(redis_server)) as server:
        assert fresh_get(server, "/healthz").status_code == 200
        yield server


def storm(port: int, count: int, sockets: list[socket.socket], timeout: float = 60) -> dict[str, bytes]:
    """Open ``count`` streams at once (every request sent before any answer is read) into ``sockets``,
    left open for the caller to close; what each one got until its ``retry:`` line or ``event: busy``."""
    selector = selectors.DefaultSelector()
    got = {}
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /sse/subscribe/storm-{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, f"storm-{i}")
        sockets.append(sock)
        got[f"storm-{i}"] = b""
    pending, deadline = set(got), time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(1):
            chunk = key.fileobj.recv(65536)
            got[key.data] += chunk
            if not chunk or b"retry:" in got[key.data] or b"event: busy" in got[key.data]:
                pending.discard(key.data)
                selector.unregister(key.fileobj)
    selector.close()
    return got


def test_a_storm_of_streams_is_admitted_whole(worker):
    sockets: list[socket.socket] = []
    try:
        got = storm(worker.port, STORM, sockets)
        busy = sorted(cid for cid, body in got.items() if b"event: busy" in body)
        unanswered = sorted(cid for cid, body in got.items() if b"retry:" not in body)
        assert not busy, f"{len(busy)} of {STORM} streams turned away as busy"
        assert not unanswered, f"{len(unanswered)} of {STORM} streams got no retry:"
        assert all(body.startswith(b"HTTP/1.1 200") for body in got.values())
        assert wait_for(lambda: fresh_get(worker, "/sse/clients").json()["connections"] == STORM, 20)
    finally:
        for sock in sockets:
            sock.close()
    assert wait_for(lambda: fresh_get(worker, "/sse/clients").json()["connections"] == 0, 20)


def test_callers_share_a_call_but_never_get_an_answer_older_than_their_question():
    calls: list[int] = []

    def ask() -> int:
        calls.append(len(calls))
        gevent.sleep(0.01)  # a round trip, during which more callers arrive
        return calls[-1]

    shared = Coalesced(ask, cooperative=True)
    first = [gevent.spawn(shared) for _ in range(50)]
    gevent.sleep(0.001)  # the first call is on its way
    later = [gevent.spawn(shared) for _ in range(50)]
    gevent.joinall(first + later, timeout=5, raise_error=True)
    assert [g.value for g in first] == [0] * 50
    assert [g.value for g in later] == [1] * 50  # the call that started after they asked
    assert len(calls) == 2


def test_an_error_reaches_every_caller_of_its_round_and_the_next_round_calls_again():
    answers = iter([RuntimeError("redis away"), 7])

    def ask() -> int:
        gevent.sleep(0.005)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    shared = Coalesced(ask, cooperative=True)
    failed = [gevent.spawn(shared) for _ in range(5)]
    gevent.joinall(failed, timeout=5)
    assert all(isinstance(g.exception, RuntimeError) for g in failed)
    assert shared() == 7
