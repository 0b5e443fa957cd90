"""One-time tickets across the whole service: with the Redis broker a ticket bought from one worker is good
on any worker, once, even when several workers race to take it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import pytest

from .servers import Gunicorn, service
from .sse import RawStream

SECRET = "ticket-test-secret-0123456789-abcdefghijklmn"


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request) -> Iterator[Gunicorn]:
    env = {"PUSHSVC_JWT_SECRET": SECRET, "PUSHSVC_HEARTBEAT_SECONDS": "0.5"}
    with service(request.param, env) as gunicorn:
        yield gunicorn


def ticket(server: Gunicorn, sub: str) -> str:
    t = jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
    # A fresh connection per ticket, so that with two workers both of them issue some.
    reply = httpx.post(server.url("/sse/tickets"), headers={"Authorization": f"Bearer {t}"})
    assert reply.status_code == 200
    return reply.json()["ticket"]


def status(server: Gunicorn, path: str) -> int:
    s = RawStream(server.port, path)
    s.close()
    return s.status


def test_every_ticket_works_once_on_any_worker(server):
    tickets = [ticket(server, "tk-user") for _ in range(12)]
    for t in tickets:
        assert status(server, f"/sse/subscribe/tk-user?ticket={t}") == 200
    for t in tickets:
        assert status(server, f"/sse/subscribe/tk-user?ticket={t}") == 401


def test_racing_for_one_ticket_only_one_wins(server):
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(5):
            path = f"/sse/subscribe/tk-race?ticket={ticket(server, 'tk-race')}"
            results = list(pool.map(status, [server] * 6, [path] * 6))
            assert sorted(results) == [200] + [401] * 5
