"""Over the stream cap: a soft refusal that brings browsers back later, and room for everything else."""

from __future__ import annotations

import re

import httpx
import pytest

from .helpers import wait_for
from .servers import Gunicorn
from .sse import RawStream

CAP = 4


@pytest.fixture(scope="module")
def capped():
    env = {"PUSHSVC_MAX_CONNECTIONS": str(CAP), "PUSHSVC_WORKER_CONNECTIONS": "64"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


def test_over_the_cap_gets_busy_with_200_and_existing_streams_carry_on(capped):
    held = [RawStream(capped.port, f"/sse/subscribe/cap-{n}") for n in range(CAP)]
    try:
        assert wait_for(lambda: httpx.get(capped.url("/sse/clients")).json()["connections"] == CAP)
        retries = set()
        for _ in range(5):
            extra = RawStream(capped.port, "/sse/subscribe/cap-extra", {"Last-Event-ID": "1-2"})
            assert extra.status == 200
            assert extra.wait_closed(5), "a refused stream ends, so the browser retries later"
            body = extra.body.decode()
            events = extra.events()
            assert [e.event for e in events] == ["busy"]
            assert events[0].id == "1-2", "the refusal keeps the client's resume point"
            retries.add(int(re.search(r"retry: (\d+)", body).group(1)))
            extra.close()
        assert len(retries) > 1, "the retry is jittered so refused browsers do not return together"
        assert all(2000 <= r <= 8000 for r in retries)
        # Publish and health still find room (without it they would wait in the accept queue until the
        # client gives up), and the held streams still receive.
        assert httpx.get(capped.url("/healthz"), timeout=10).status_code == 200
        reply = httpx.post(capped.url("/sse/publish"), json={"broadcast": True, "data": "hello"}, timeout=10)
        assert reply.status_code == 202 and reply.json()["online"] == CAP
        for stream in held:
            assert stream.read_until(b"data: hello\n\n", 5)
        assert httpx.get(capped.url("/sse/clients/cap-extra")).status_code == 404
    finally:
        for stream in held:
            stream.close()
    assert wait_for(lambda: httpx.get(capped.url("/sse/clients")).json()["connections"] == 0)
    back = RawStream(capped.port, "/sse/subscribe/cap-extra")
    try:
        assert back.read_until(b"retry: 3000\n") and not back.closed
    finally:
        back.close()
