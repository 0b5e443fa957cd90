"""The stream cap follows the process's real file limit: under ``prlimit --nofile=300:300`` with
``PUSHSVC_MAX_CONNECTIONS=5000`` a worker admits fewer streams than descriptors, refuses the rest softly,
and publish and ``/healthz`` still answer; one start-up line says why, and no ``EMFILE`` traceback."""

from __future__ import annotations

import httpx

from pushsvc.limits import FD_RESERVE, HANDLER_HEADROOM, connection_cap, stream_cap

from .helpers import wait_for
from .servers import Gunicorn, require
from .sse import RawStream

LIMIT = 300
CAP = LIMIT - FD_RESERVE - HANDLER_HEADROOM


def test_the_caps_follow_the_limit():
    assert stream_cap(5000, None) == 5000 and connection_cap(6000, None) == 6000
    assert stream_cap(5000, LIMIT) == CAP and connection_cap(6000, LIMIT) == LIMIT - FD_RESERVE
    assert stream_cap(100, LIMIT) == 100  # a limit that does not bind changes nothing


def test_a_worker_under_a_low_file_limit_refuses_softly_and_keeps_answering():
    prlimit = require("prlimit", "PUSHSVC_REQUIRE_PRLIMIT")
    # A refused subscribe's connection is kept alive for a next request: at the connection cap the next
    # subscribes wait in the backlog until those keep-alives run out, so a short one (1 s, not 5) each time.
    env = {"PUSHSVC_MAX_CONNECTIONS": "5000", "PUSHSVC_KEEPALIVE": "1"}
    with Gunicorn(env=env, wrapper=(prlimit, f"--nofile={LIMIT}:{LIMIT}", "--")) as server:
        streams: list[RawStream] = []
        try:
            # More subscribes than the worker has descriptors.
            for i in range(LIMIT + 20):
                streams.append(RawStream(server.port, f"/sse/subscribe/fd-{i}", timeout=10))
            for s in streams:
                assert s.read_until(b"\n\n", seconds=10)
            busy = [s for s in streams if b"event: busy" in s.body]
            assert len(streams) - len(busy) == CAP
            assert all(b'"reason":"full"' in s.body for s in busy)
            assert httpx.get(server.url("/healthz"), timeout=10).status_code == 200
            reply = httpx.post(server.url("/sse/publish"), json={"prefix": "fd-", "data": "still here"},
                               timeout=10)
            assert reply.status_code == 202 and reply.json()["online"] == CAP
        finally:
            for s in streams:
                s.close()
        assert wait_for(lambda: httpx.get(server.url("/sse/clients"), timeout=5).json()["connections"] == 0,
                        10)
        log = server.output()
    lines = [line for line in log.splitlines() if "file limit" in line]
    assert len(lines) == 1 and f"at {CAP} streams" in lines[0], lines
    assert "EMFILE" not in log and "Too many open files" not in log and "Traceback" not in log


def test_no_warning_when_the_limit_does_not_bind():
    prlimit = require("prlimit", "PUSHSVC_REQUIRE_PRLIMIT")
    env = {"PUSHSVC_MAX_CONNECTIONS": "100"}
    with Gunicorn(env=env, wrapper=(prlimit, f"--nofile={LIMIT}:{LIMIT}", "--")) as server:
        assert httpx.get(server.url("/healthz"), timeout=10).status_code == 200
        assert "file limit" not in server.output()
