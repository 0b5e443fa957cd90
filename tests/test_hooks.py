"""Section 8 over real HTTP, on both brokers: a host app's four hooks, debounced online/offline, in-band
``event: presence``, and the hooks that misbehave. The grace period is 2 s here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .helpers import BROKERS, assert_next_is_marker, publisher, wait_for
from .hooklog import PRESENCE_APP, HookLog, presence_env, presence_server
from .servers import Gunicorn, RedisServer
from .sse import RawStream

GRACE_SECONDS = 2.0


@pytest.fixture(scope="module", params=BROKERS)
def hosted(request) -> Iterator[tuple[Gunicorn, HookLog]]:
    """The presence app under gunicorn: one worker with the memory broker, or two on a private Redis."""
    log = HookLog()
    env = presence_env(log, grace=GRACE_SECONDS)
    redis = None
    if request.param == "redis":
        redis = RedisServer().start()
        env["PUSHSVC_BROKER_URL"] = redis.url
    try:
        with Gunicorn(app=PRESENCE_APP, env=env, workers=2 if redis else 1) as server:
            yield server, log
    finally:
        if redis is not None:
            redis.cleanup()
        log.remove()


def open_streams(server: Gunicorn, paths: list[str]) -> list[RawStream]:
    """Open several streams at once (so that, with two workers, both may get some), each answered."""
    with ThreadPoolExecutor(len(paths)) as pool:
        streams = list(pool.map(lambda path: RawStream(server.port, path), paths))
    for stream in streams:
        assert stream.read_until(b"retry:"), stream.body
    return streams


def go_offline(server: Gunicorn, log: HookLog, client: str) -> None:
    """A marker transition: ``client`` comes online, leaves, and its offline is reported."""
    stream = open_streams(server, [f"/sse/subscribe/{client}"])[0]
    log.wait("online", client)
    stream.close()
    log.wait("offline", client)


def test_per_stream_hooks_see_the_stream_and_why_it_ended(hosted):
    server, log = hosted
    first, second = open_streams(server, ["/sse/subscribe/hk-a?group=g2&group=g1", "/sse/subscribe/hk-b"])
    connects = log.wait("connect", "hk-a") + log.wait("connect", "hk-b")
    assert connects[0]["groups"] == ["g2", "g1"] and connects[1]["groups"] == []
    assert {c["app"] for c in connects} == {"tests.apps.presence_app"}  # inside the app's context
    assert len({c["stream"] for c in connects}) == 2
    first.close()
    gone = log.wait("disconnect", "hk-a")
    assert [(d["stream"], d["reason"]) for d in gone] == [(connects[0]["stream"], "client")]
    assert httpx.post(server.url("/sse/close/hk-b"), timeout=10).json() == {"closed": 1}
    assert second.wait_closed(10)
    closed = log.wait("disconnect", "hk-b")
    assert [(d["stream"], d["reason"]) for d in closed] == [(connects[1]["stream"], "closed")]
    go_offline(server, log, "hk-marker")
    assert len(log.entries("disconnect", "hk-a")) == len(log.entries("disconnect", "hk-b")) == 1


def test_three_tabs_give_one_online_and_the_last_one_leaving_one_offline(hosted):
    server, log = hosted
    tabs = open_streams(server, ["/sse/subscribe/tabs"] * 3)
    log.wait("connect", "tabs", 3)
    log.wait("online", "tabs")
    for tab in tabs[:2]:
        tab.close()
    log.wait("disconnect", "tabs", 2)
    go_offline(server, log, "tabs-marker-1")
    assert log.transitions("tabs") == ["online"]
    closed = time.time()  # the server sees the close after this
    tabs[2].close()
    offline = log.wait("offline", "tabs")[0]
    assert offline["at"] - closed >= GRACE_SECONDS - 0.05, "the offline came before the grace period was over"
    go_offline(server, log, "tabs-marker-2")
    assert log.transitions("tabs") == ["online", "offline"]
    online = log.entries("online", "tabs")[0]
    assert online["id"] != offline["id"] and online["app"] == "tests.apps.presence_app"


def test_a_reload_within_the_grace_period_reports_nothing(hosted):
    server, log = hosted
    page, marker = open_streams(server, ["/sse/subscribe/reloader", "/sse/subscribe/reload-marker"])
    log.wait("online", "reloader")
    log.wait("online", "reload-marker")
    page.close()
    marker.close()  # its offline falls due just after the reloader's would
    again = open_streams(server, ["/sse/subscribe/reloader"])[0]
    log.wait("offline", "reload-marker")
    assert log.transitions("reloader") == ["online"]
    again.close()
    log.wait("offline", "reloader")
    assert log.transitions("reloader") == ["online", "offline"]


def test_presence_events_reach_only_the_streams_that_asked_about_others(hosted):
    server, log = hosted
    # One after the other: alice watches before carol comes.
    alice = open_streams(server, ["/sse/subscribe/pr-alice?group=room&presence=1"])[0]
    carol = open_streams(server, ["/sse/subscribe/pr-carol?group=room&group=hall"])[0]
    log.wait("online", "pr-carol")
    assert alice.read_until(b'"client":"pr-carol","state":"online"', 10), alice.body
    bob = open_streams(server, ["/sse/subscribe/pr-bob?group=room&group=other&presence=1"])[0]
    assert alice.read_until(b'"client":"pr-bob","state":"online"', 10), alice.body
    event = [e for e in alice.events() if e.event == "presence"][-1]
    assert (event.data, event.id) == ('{"group":"room","client":"pr-bob","state":"online"}', "")
    bob.close()
    assert alice.read_until(b'"client":"pr-bob","state":"offline"', 10), alice.body
    seen = [e.data for e in alice.events() if e.event == "presence"]
    assert seen == ['{"group":"room","client":"pr-carol","state":"online"}',
                    '{"group":"room","client":"pr-bob","state":"online"}',
                    '{"group":"room","client":"pr-bob","state":"offline"}']
    with httpx.Client(base_url=server.base, timeout=10) as http:
        assert_next_is_marker([alice, carol], publisher(http.post, group="room"))
    assert not [e for e in carol.events() if e.event == "presence"]
    alice.close()
    carol.close()


def test_presence_is_a_reserved_event_name_and_the_switch_is_checked(hosted):
    server, _ = hosted
    reply = httpx.post(server.url("/sse/publish"), json={"to": "x", "data": "d", "event": "presence"},
                       timeout=10)
    assert reply.status_code == 400 and reply.json()["field"] == "event"
    reply = httpx.get(server.url("/sse/subscribe/x?presence=maybe"), timeout=10)
    assert reply.status_code == 400 and reply.json()["field"] == "presence"


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[tuple[Gunicorn, HookLog]]:
    with presence_server(PRESENCE_MISBEHAVE="1") as running:
        yield running


def test_hooks_that_raise_or_block_delay_no_stream_no_publish_and_no_other_hook(misbehaving):
    server, log = misbehaving
    started = time.monotonic()
    streams = open_streams(server, ["/sse/subscribe/mb-1", "/sse/subscribe/mb-2"])
    with httpx.Client(base_url=server.base, timeout=10) as http:
        assert_next_is_marker(streams, publisher(http.post, broadcast=True))
        assert time.monotonic() - started < 30  # the blocking hooks sleep for 60 s
        log.wait("connect", "mb-1")
        log.wait("online", "mb-2")
        for stream in streams:
            stream.close()
        log.wait("disconnect", "mb-2")
        log.wait("offline", "mb-1")
        metrics = http.get("/metrics").text
    assert 'pushsvc_hook_errors_total{hook="connect"} 2.0' in metrics
    assert 'pushsvc_hook_errors_total{hook="online"} 2.0' in metrics
    assert wait_for(lambda: "on_connect hook raises_on_connect failed for client mb-1" in server.output())
    assert "RuntimeError: hook failure for mb-2" in server.output()
