"""Redis going away and coming back, under two gunicorn workers: what streams, publishers and health see."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from functools import partial

import pytest
import redis

from pushsvc.brokers.redis.reader import CANARY_INTERVAL_SECONDS, CANARY_STALE_SECONDS

from .helpers import assert_next_is_marker, publisher, wait_for
from .redis_tools import fresh_get, fresh_post, streams_on
from .servers import Gunicorn, RedisServer, free_port


@pytest.fixture
def streams(cluster, redis_server):
    with streams_on(cluster) as opened:
        yield opened


def every_answer(server: Gunicorn, path: str, status: int, times: int = 6) -> bool:
    """``times`` requests on new connections (so both workers answer some) all get ``status``."""
    return all(fresh_get(server, path).status_code == status for _ in range(times))


def wait_healthy(server: Gunicorn) -> None:
    assert wait_for(lambda: every_answer(server, "/healthz", 200), 20, interval=0.2), server.output()[-3000:]


def shutdown_keeping_data(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(save=True)
    assert redis_server.proc is not None
    redis_server.proc.wait(10)


def test_outage_then_recovery_keeps_streams_and_loses_or_repeats_nothing(cluster, streams, redis_server):
    stream = streams.raw("/sse/subscribe/outage")
    assert stream.read_until(b"retry:")
    before = fresh_post(cluster, "/sse/publish", json={"to": "outage", "data": "before"}).json()["id"]
    assert stream.read_until(b"data: before\n", 5)

    shutdown_keeping_data(redis_server)
    assert wait_for(lambda: every_answer(cluster, "/healthz", 503), 10, interval=0.1)
    refused = fresh_post(cluster, "/sse/publish", json={"to": "outage", "data": "lost"})
    assert refused.status_code == 503 and "error" in refused.json()
    # Open streams stay open and keep their heartbeats (1 s apart): two more, with Redis down.
    beats = stream.body.count(b": keep-alive\n\n")
    assert stream.read_until(b": keep-alive\n\n", 10, count=beats + 2) and not stream.closed
    # A new subscriber is asked to come back later, never refused for good.
    for _ in range(4):
        newcomer = streams.raw("/sse/subscribe/outage-new")
        assert newcomer.status == 200
        assert newcomer.wait_closed(5)
        assert b"retry:" in newcomer.body and b"event: busy\n" in newcomer.body

    redis_server.start()
    wait_healthy(cluster)
    after = fresh_post(cluster, "/sse/publish", json={"to": "outage", "data": "after"})
    assert after.status_code == 202
    assert stream.read_until(b"data: after\n", 5)
    assert [e.data for e in stream.events()] == ["before", "after"]
    # The history survived (same generation): resume from before the outage fills the gap exactly.
    resumed = streams.raw("/sse/subscribe/outage", headers={"Last-Event-ID": before})
    assert resumed.read_until(b"data: after\n", 5)
    assert [(e.id, e.data) for e in resumed.events()] == [(after.json()["id"], "after")]


def test_a_worker_started_while_redis_is_down_refuses_softly_then_recovers(cluster, streams, redis_server):
    shutdown_keeping_data(redis_server)
    try:
        # gunicorn replaces a crashed worker; the new one builds its reader while Redis is away.
        old = set(cluster.worker_pids())
        os.kill(min(old), signal.SIGKILL)
        assert wait_for(lambda: len(set(cluster.worker_pids()) - old) == 1, 15)
        assert wait_for(lambda: every_answer(cluster, "/healthz", 503), 10, interval=0.2)
        for _ in range(4):
            newcomer = streams.raw("/sse/subscribe/respawned")
            assert newcomer.status == 200, "never a 5xx that would stop a browser for good"
            assert newcomer.wait_closed(5)
            assert b"event: busy\n" in newcomer.body
    finally:
        redis_server.start()
    wait_healthy(cluster)
    stream = streams.raw("/sse/subscribe/respawned")
    assert stream.read_until(b"retry:")
    assert wait_for(lambda: fresh_get(cluster, "/sse/clients/respawned").status_code == 200, 5)
    assert fresh_post(cluster, "/sse/publish", json={"to": "respawned", "data": "back"}).status_code == 202
    assert stream.read_until(b"data: back\n", 5)


def test_reader_connection_killed_comes_back_and_misses_nothing(cluster, streams, redis_server):
    opened = streams.on_every_worker("reader-kill", redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        readers = [c for c in admin.client_list() if c.get("name", "").startswith("pushsvc-reader:")]
        assert len(readers) == 2
        for entry in readers:
            admin.client_kill_filter(_id=entry["id"])
    finally:
        admin.close()
    sent = [fresh_post(cluster, "/sse/publish", json={"to": "reader-kill", "data": f"n{i}"}).json()["id"]
            for i in range(20)]
    for stream in opened:
        assert stream.read_until(b"data: n19\n", 10)
        assert [e.id for e in stream.events()] == sent
    wait_healthy(cluster)


def test_health_follows_the_canary_not_the_connection(cluster, streams, redis_server):
    """A server that hangs (connections open, nothing answered) is found by the canary alone."""
    stream = streams.raw("/sse/subscribe/hang")
    assert stream.read_until(b"retry:")
    admin = redis.Redis.from_url(redis_server.url)
    try:
        # The canary goes stale a few seconds into the pause; the pause lasts twice that, so a loaded
        # machine still sees the 503 while Redis hangs, never only after it has woken up.
        pause = 2 * (CANARY_STALE_SECONDS + CANARY_INTERVAL_SECONDS) + 1
        admin.client_pause(int(pause * 1000), all=True)
        assert wait_for(lambda: fresh_get(cluster, "/healthz").status_code == 503, pause, interval=0.2)
        wait_healthy(cluster)
    finally:
        admin.client_unpause()
        admin.close()
    fresh_post(cluster, "/sse/publish", json={"to": "hang", "data": "still here"})
    assert stream.read_until(b"data: still here\n", 5)


def test_redis_restarted_empty_gives_resuming_clients_reset(cluster, streams, redis_server):
    stream = streams.raw("/sse/subscribe/amnesia")
    assert stream.read_until(b"retry:")
    old = fresh_post(cluster, "/sse/publish", json={"to": "amnesia", "data": "old"}).json()["id"]
    assert stream.read_until(b"data: old\n", 5)

    redis_server.stop(signal.SIGKILL)
    for name in os.listdir(redis_server.dir):  # no snapshot to come back from
        os.unlink(os.path.join(redis_server.dir, name))
    redis_server.start()
    wait_healthy(cluster)

    new = fresh_post(cluster, "/sse/publish", json={"to": "amnesia", "data": "new"}).json()["id"]
    assert int(new.split("-")[0]) > int(old.split("-")[0]), "a new generation must sort after the old one"
    assert stream.read_until(b"data: new\n", 5)
    assert [e.data for e in stream.events()] == ["old", "new"]

    resumed = streams.raw("/sse/subscribe/amnesia", headers={"Last-Event-ID": old})
    assert resumed.read_until(b"event: reset\n") and resumed.read_until(b"\n\n")
    [reset] = resumed.events()
    assert reset.event == "reset"
    assert json.loads(reset.data) == {"reason": "unknown-id", "lastEventId": old}
    # No partial replay ("new" is in the new history): after the reset, live events only.
    assert_next_is_marker(resumed, publisher(partial(fresh_post, cluster), to="amnesia"))


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{free}/0", "redis://127.0.0.1:notaport/0"])
def test_bad_redis_url_stops_start_up_with_one_line(url):
    server = Gunicorn(env={"PUSHSVC_BROKER_URL": url.format(free=free_port())})
    # RuntimeError: gunicorn exited by itself (a server that kept retrying would end in TimeoutError).
    with pytest.raises(RuntimeError):
        server.start(timeout=30)
    lines = [ln for ln in server.output().splitlines() if ln.startswith("pushsvc:")]
    assert len(lines) == 1 and "PUSHSVC_BROKER_URL" in lines[0], server.output()
    assert "Traceback" not in server.output()
    server.stop()
