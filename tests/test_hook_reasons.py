"""``on_disconnect``'s reason for the ends that need a server of their own: a slow client cut off, a worker
draining before a restart, a broker that fails mid-resume. (client and closed: tests/test_hooks.py.)"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import gevent
import httpx
import pytest

from pushsvc.config import Settings
from pushsvc.hooks import Hooks
from pushsvc.service import Service

from .helpers import wait_for
from .hooklog import HookLog, presence_server
from .servers import Gunicorn, RedisServer
from .sse import RawStream


@pytest.fixture(scope="module")
def tight() -> Iterator[tuple[Gunicorn, HookLog]]:
    with presence_server(PUSHSVC_QUEUE_SIZE="20", PUSHSVC_MAX_MESSAGE_BYTES="1000000") as running:
        yield running


def test_a_client_cut_off_for_being_slow_ends_with_slow(tight):
    server, log = tight
    slow = RawStream(server.port, "/sse/subscribe/rs-slow", rcvbuf=4096)
    try:
        assert slow.status == 200
        log.wait("connect", "rs-slow")
        payload = "x" * 60_000
        with httpx.Client(base_url=server.base, timeout=10) as http:
            for n in range(150):
                reply = http.post("/sse/publish", json={"to": "rs-slow", "data": f"{n}:{payload}"})
                assert reply.status_code == 202
                if log.entries("disconnect", "rs-slow"):
                    break
        assert [d["reason"] for d in log.wait("disconnect", "rs-slow")] == ["slow"]
    finally:
        slow.close()


def test_streams_ended_by_the_drain_end_with_drain(tight):
    server, log = tight
    streams = [RawStream(server.port, f"/sse/subscribe/rs-drain-{n}") for n in range(3)]
    for stream in streams:
        assert stream.read_until(b"retry:")
    old = server.worker_pids()
    os.kill(server.proc.pid, signal.SIGHUP)  # gunicorn replaces its workers, draining the old ones
    for n, stream in enumerate(streams):
        assert stream.read_until(b": restarting", 20), stream.body
        assert [d["reason"] for d in log.wait("disconnect", f"rs-drain-{n}")] == ["drain"]
        assert {d["pid"] for d in log.entries("disconnect", f"rs-drain-{n}")} <= set(old)
        stream.close()
    assert wait_for(lambda: server.worker_pids() and not set(server.worker_pids()) & set(old), 20)


def test_a_broker_that_fails_during_the_resume_ends_the_stream_with_error():
    redis = RedisServer().start()
    ended: list[tuple[str, str]] = []
    hooks = Hooks()
    hooks.disconnect.append(lambda stream, reason: ended.append((stream.client_id, reason)))
    service = Service(Settings.load(broker_url=redis.url), hooks=hooks)
    try:
        published = service.publish([])  # nothing: starts the service
        assert published == []
        sub = service.subscribe("rs-error", last_event_id="1-1-0")
        body = iter(sub.body)
        assert next(body).startswith(b"retry:")  # registered; on_subscribe has been to Redis
        redis.stop(signal.SIGKILL)
        rest = b"".join(body)
        assert b"event: busy" in rest
        assert wait_for(lambda: (gevent.sleep(0.05), ended)[1] == [("rs-error", "error")], 5)
    finally:
        service.stop()
        redis.cleanup()
