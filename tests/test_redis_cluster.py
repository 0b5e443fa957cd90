"""Two gunicorn workers on one private Redis behave as one service: fan-out, presence, close, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import pytest
import redis

from pushsvc.brokers.redis.broker import POOL_SIZE

from .helpers import assert_next_is_marker, publisher, wait_for
from .redis_tools import (
    fresh_get,
    fresh_post,
    holders,
    streams_on,
    workers_holding,
)
from .servers import ROOT

# A killed worker's presence expires after this (a third of the default 15 s), so its test waits seconds.
PRESENCE_TTL_SECONDS = 5


@pytest.fixture(scope="module")
def cluster_settings() -> dict[str, str]:
    return {"PUSHSVC_PRESENCE_TTL_SECONDS": str(PRESENCE_TTL_SECONDS)}


@pytest.fixture
def streams(cluster):
    with streams_on(cluster) as opened:
        yield opened


def test_thirty_subscribers_on_both_workers_get_broadcast_and_their_own_events(cluster, streams,
                                                                             redis_server):
    ids = [f"fan-{i}" for i in range(30)]
    opened = {cid: streams.raw(f"/sse/subscribe/{cid}") for cid in ids}
    for stream in opened.values():
        assert stream.status == 200 and stream.read_until(b"retry:")
    assert wait_for(lambda: len(workers_holding(redis_server.url, ids)) == 2, 5), "not spread over workers"

    # Presence, from whichever worker answers: all 30, right after they connected.
    for _ in range(6):
        listing = fresh_get(cluster, "/sse/clients").json()
        assert listing["count"] == 30 and listing["connections"] == 30
        assert {c["id"] for c in listing["clients"]} == set(ids)
        assert fresh_get(cluster, "/sse/clients/fan-7").json() == {"id": "fan-7", "connections": 1,
                                                                   "groups": []}

    reply = fresh_post(cluster, "/sse/publish", json={"broadcast": True, "data": "to-everyone"})
    assert reply.status_code == 202 and reply.json()["online"] == 30
    for cid in ids:
        reply = fresh_post(cluster, "/sse/publish", json={"to": cid, "data": f"only-{cid}"})
        assert reply.status_code == 202 and reply.json()["online"] == 1
    # A small constant number of Redis connections per worker, not one per subscriber.
    admin = redis.Redis.from_url(redis_server.url)
    try:
        assert len(admin.client_list()) <= 2 * (1 + POOL_SIZE) + 1
    finally:
        admin.close()
    for cid, stream in opened.items():
        assert stream.read_until(f"data: only-{cid}\n".encode(), 5), cid
        events = stream.events()
        assert [e.data for e in events] == ["to-everyone", f"only-{cid}"], cid
        assert events[0].id < events[1].id or len(events[0].id) < len(events[1].id)


def test_group_and_prefix_counts_span_workers(cluster, streams, redis_server):
    ids = [f"grp-{i}" for i in range(8)]
    for cid in ids:
        assert streams.raw(f"/sse/subscribe/{cid}?group=team").read_until(b"retry:")
    assert wait_for(lambda: sum(sum(holders(redis_server.url, c).values()) for c in ids) == 8, 5)
    for _ in range(4):
        reply = fresh_post(cluster, "/sse/publish", json={"group": "team", "data": "g"})
        assert reply.json()["online"] == 8
        assert fresh_post(cluster, "/sse/publish", json={"prefix": "grp-", "data": "p"}).json()["online"] == 8


def test_close_ends_the_streams_of_an_id_on_every_worker(cluster, streams, redis_server):
    opened = streams.on_every_worker("closer", redis_url=redis_server.url)
    other = streams.raw("/sse/subscribe/closer-not")
    assert other.read_until(b"retry:")
    reply = fresh_post(cluster, "/sse/close/closer")
    assert reply.json() == {"closed": len(opened)}
    close_ids = set()
    for stream in opened:
        assert stream.wait_closed(5)
        last = stream.events()[-1]
        assert last.event == "close"
        close_ids.add(last.id)
    assert len(close_ids) == 1
    # The browser's reconnect after the close carries its id: 204 from any worker.
    for _ in range(6):
        again = fresh_get(cluster, "/sse/subscribe/closer", headers={"Last-Event-ID": close_ids.pop()
                                                                     if close_ids else last.id})
        assert again.status_code == 204
    # The close went to "closer" alone: the other client's next event is this marker, not a close.
    assert_next_is_marker(other, publisher(partial(fresh_post, cluster), to="closer-not"))


def test_publishing_from_a_process_that_serves_no_streams(cluster, streams, redis_server):
    stream = streams.raw("/sse/subscribe/from-script")
    assert stream.read_until(b"retry:")
    script = textwrap.dedent(f"""
        from flask import Flask
        from pushsvc import Push
        app = Flask("job")
        push = Push(app, broker_url={redis_server.url!r})
        event_id = push.send("from-script", {{"job": 1}}, event="job")
        service = app.extensions["pushsvc"]
        assert service.broker.reader is None, "a publisher must not start a reader"
        print(event_id)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()
    assert stream.read_until(b'data: {"job":1}\n', 5)
    assert stream.events()[-1].id == event_id and stream.events()[-1].event == "job"


def test_killed_worker_clients_resume_elsewhere_and_vanish_from_presence(cluster, streams, redis_server):
    victim_stream = streams.raw("/sse/subscribe/survivor")
    assert victim_stream.read_until(b"retry:")
    assert wait_for(lambda: holders(redis_server.url, "survivor"), 10)
    victim = next(iter(holders(redis_server.url, "survivor")))
    # A second client held only by the victim worker, to watch its stale presence expire.
    ghost = streams.one_on_worker("ghost", victim, redis_server.url)

    first = fresh_post(cluster, "/sse/publish", json={"to": "survivor", "data": "before"}).json()["id"]
    assert victim_stream.read_until(b"data: before\n", 5)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    assert victim_stream.wait_closed(5)
    missed = [fresh_post(cluster, "/sse/publish", json={"to": "survivor", "data": f"missed-{i}"})
              for i in range(3)]
    assert all(r.status_code == 202 for r in missed)

    resumed = streams.raw("/sse/subscribe/survivor", headers={"Last-Event-ID": first})
    assert resumed.read_until(b"data: missed-2\n", 5)
    assert [e.data for e in resumed.events()] == ["missed-0", "missed-1", "missed-2"]
    assert [e.id for e in resumed.events()] == [r.json()["id"] for r in missed]

    # A killed worker never withdraws its presence; its entries must expire with their TTL. Twice the
    # TTL from the kill tells "expired" from "kept forever" with room for a loaded machine.
    deadline = killed_at + 2 * PRESENCE_TTL_SECONDS
    assert wait_for(lambda: fresh_get(cluster, f"/sse/clients/{ghost}").status_code == 404,
                    deadline - time.monotonic())
    assert wait_for(lambda: fresh_get(cluster, "/sse/clients/survivor").json()["connections"] == 1, 5)


def test_a_publish_right_after_a_stream_opened_counts_it_on_any_worker(cluster, streams, redis_server):
    # The stream's first byte leaves only once its worker's presence write is in Redis, so a publish that
    # another worker answers right after it (the backend told "the page is open") counts it.
    for i in range(30):
        stream = streams.raw(f"/sse/subscribe/counted-{i}")
        assert stream.read_until(b"retry:")
        reply = fresh_post(cluster, "/sse/publish", json={"to": f"counted-{i}", "data": "x"})
        assert reply.status_code == 202 and reply.json()["online"] == 1, (i, reply.text)
        assert stream.read_until(b"data: x\n", 5)
        stream.close()
