"""Graceful shutdown and reload: every open stream ends cleanly with a jittered ``retry:``, nothing
accepted is lost, and (Redis) a client that comes back to the restarted server gets what it missed."""

from __future__ import annotations

import os
import re
import signal
import time

import gevent
import httpx
import pytest

from pushsvc.brokers.base import BrokerUnavailable
from pushsvc.config import Settings
from pushsvc.model import Message, Target
from pushsvc.registry import Connection
from pushsvc.service import Service

from .helpers import wait_for
from .servers import Gunicorn, free_port
from .sse import RawStream

BUSY_RETRY_MS = 5000  # the default busy_retry_ms: drain delays are this, give or take half
# Long, so that streams left to run out the graceful timeout could not pass for streams ended at once.
GRACEFUL_TIMEOUT = 60
RETRY = re.compile(rb"retry: (\d+)\n")


class EndingStream(RawStream):
    """A raw stream that tells a clean end (the last, empty chunk) from a connection that was cut."""

    clean_end = False

    def _recv(self, end: float) -> bool:
        was_closed = self.closed
        ok = super()._recv(end)
        if self.closed and not was_closed:
            self.clean_end = ok
        return ok

    def last_retry(self) -> int:
        return int(RETRY.findall(self.body)[-1])


def open_streams(server: Gunicorn, count: int, prefix: str) -> list[EndingStream]:
    streams = [EndingStream(server.port, f"/sse/subscribe/{prefix}-{i}") for i in range(count)]
    for s in streams:
        assert s.read_until(b"retry: 3000\n")
    return streams


def assert_drained(streams: list[EndingStream]) -> None:
    """Each stream ended cleanly after a restart comment and its own retry hint."""
    for s in streams:
        assert s.wait_closed(10), s.body[-200:]
        assert s.clean_end, "the stream was cut, not ended"
        tail = s.body.rsplit(b": restarting\n\n", 1)
        assert len(tail) == 2 and re.fullmatch(rb"retry: \d+\n\n", tail[1]), s.body[-200:]
    retries = [s.last_retry() for s in streams]
    assert all(BUSY_RETRY_MS // 2 <= r <= BUSY_RETRY_MS * 3 // 2 for r in retries), retries
    # 20 draws from a 5000 ms wide range: equal values would mean no jitter at all.
    assert len(set(retries)) >= len(retries) - 2, retries


def test_sigterm_ends_every_stream_with_its_own_retry():
    server = Gunicorn(env={"PUSHSVC_HEARTBEAT_SECONDS": "1",
                           "PUSHSVC_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT)}).start()
    streams: list[EndingStream] = []
    try:
        streams = open_streams(server, 20, "sd-term")
        reply = httpx.post(server.url("/sse/publish"), json={"prefix": "sd-term-", "data": "last words"})
        assert reply.status_code == 202 and reply.json()["online"] == 20
        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        assert_drained(streams)
        # The event accepted before the signal reached every stream, ahead of the farewell.
        for s in streams:
            assert [e.data for e in s.events()] == ["last words"]
        assert server.proc.wait(GRACEFUL_TIMEOUT / 2) == 0
        # Streams ended at once, not when the graceful timeout ran out: a third of it is room enough for
        # a loaded machine to stop 20 streams and a worker.
        assert time.monotonic() - started < GRACEFUL_TIMEOUT / 3
        output = server.output()
        assert "graceful timeout" not in output.lower()
        assert "draining worker" in output and "20 streams asked to reconnect later" in output
    finally:
        for s in streams:
            s.close()
        server.stop()


def test_reload_drains_old_worker_and_new_one_serves():
    server = Gunicorn(env={"PUSHSVC_HEARTBEAT_SECONDS": "1"}).start()
    streams: list[EndingStream] = []
    try:
        old = server.worker_pids()
        streams = open_streams(server, 5, "sd-hup")
        os.kill(server.proc.pid, signal.SIGHUP)
        assert_drained(streams)
        assert wait_for(lambda: server.worker_pids() and old[0] not in server.worker_pids(), 10)
        fresh = EndingStream(server.port, "/sse/subscribe/sd-hup-0")
        streams.append(fresh)
        assert fresh.read_until(b"retry: 3000\n")
        reply = httpx.post(server.url("/sse/publish"), json={"to": "sd-hup-0", "data": "after"})
        assert reply.status_code == 202
        assert fresh.read_until(b"data: after\n")
        metrics = httpx.get(server.url("/metrics")).text
        # The old worker is gone from the open-connections gauge; only the fresh stream counts.
        assert re.search(r"^pushsvc_connections 1\.0$", metrics, re.M), metrics
    finally:
        for s in streams:
            s.close()
        server.stop()


def test_sigquit_still_sends_the_retry_hint():
    server = Gunicorn(env={"PUSHSVC_HEARTBEAT_SECONDS": "1"}).start()
    streams: list[EndingStream] = []
    try:
        streams = open_streams(server, 3, "sd-quit")
        os.kill(server.proc.pid, signal.SIGQUIT)
        for s in streams:
            assert s.wait_closed(10)
            assert b": restarting\n\nretry: " in s.body
        server.proc.wait(15)
    finally:
        for s in streams:
            s.close()
        server.stop()


# -- Service.drain in process -------------------------------------------------------------------------


@pytest.fixture
def service():
    svc = Service(Settings.load(environ={}, queue_size=2))
    svc.start()
    yield svc
    svc.stop()


def test_drain_queues_a_final_frame_and_cuts_full_queues(service):
    cut = []
    calm = Connection("calm", queue_size=2)
    full = Connection("full", queue_size=2, cut=lambda: cut.append("full"))
    for conn in (calm, full):
        service.registry.add(conn)
    service.publish([Message(Target.clients(["full"]), b"data: 1\n\n")] * 2)
    assert service.drain() == 1
    assert service.draining
    frame = calm.queue.get_nowait()
    assert frame.end and frame.event_id is None
    assert re.fullmatch(rb": restarting\n\nretry: \d+\n\n", frame.data)
    assert cut == ["full"] and full not in service.registry.connections
    assert service.stats.slow_disconnects["queue full at shutdown"] == 1
    # New subscribers are turned away softly while the worker drains.
    sub = service.subscribe("late")
    assert sub.status == 200 and sub.reason == "restarting"
    assert b"event: busy" in b"".join(sub.body)


def test_memory_broker_refuses_publishes_once_draining(service):
    service.drain()
    # Its history dies with this process: a 202 now would be a lie; a 503 sends the publisher elsewhere.
    with pytest.raises(BrokerUnavailable):
        service.publish([Message(Target.everyone(), b"data: x\n\n")])
    gevent.sleep(0)


# -- Redis: nothing lost across a restart ---------------------------------------------------------------

def test_redis_client_gets_every_event_published_while_server_restarts(redis_server):
    env = {"PUSHSVC_BROKER_URL": redis_server.url, "PUSHSVC_HEARTBEAT_SECONDS": "1"}
    port = free_port()
    # "other" is a second machine on the same Redis; it takes publishes while "first" is down.
    with Gunicorn(workers=2, env=env) as other:
        first = Gunicorn(workers=2, env=env, port=port).start()
        stream = EndingStream(port, "/sse/subscribe/sd-redis")
        try:
            assert stream.read_until(b"retry:")
            marker = httpx.post(first.url("/sse/publish"), json={"to": "sd-redis", "data": "marker"})
            assert marker.status_code == 202
            assert stream.read_until(b"data: marker\n")
            # Accepted just before the signal: they reach the stream before it ends, or come back on resume.
            before = [httpx.post(first.url("/sse/publish"), json={"to": "sd-redis", "data": f"before-{i}"})
                      for i in range(3)]
            assert all(r.status_code == 202 for r in before)
            first.stop()
            assert stream.wait_closed(10) and stream.clean_end
            seen = stream.events()
            meanwhile = [httpx.post(other.url("/sse/publish"), json={"to": "sd-redis", "data": f"during-{i}"})
                         for i in range(3)]
            assert all(r.status_code == 202 for r in meanwhile)
        finally:
            stream.close()
            first.stop()
        with Gunicorn(workers=2, env=env, port=port) as restarted:
            back = EndingStream(restarted.port, "/sse/subscribe/sd-redis", {"Last-Event-ID": seen[-1].id})
            try:
                assert back.read_until(b"data: during-2\n", 10)
                got = [e.data for e in seen] + [e.data for e in back.events()]
            finally:
                back.close()
    assert got == ["marker"] + [f"before-{i}" for i in range(3)] + [f"during-{i}" for i in range(3)]
