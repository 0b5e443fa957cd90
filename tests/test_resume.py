"""Resume with Last-Event-ID (header or query): exactly the missed events, or a reset; and close."""

from __future__ import annotations

import json

import pytest

from .helpers import assert_next_is_marker, publisher, wait_for
from .servers import Gunicorn
from .sse import RawStream


def publish(client, **body) -> str:
    reply = client.post("/sse/publish", json=body)
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def subscribed(client, client_id: str, n: int = 1) -> bool:
    return wait_for(lambda: client.get(f"/sse/clients/{client_id}").json().get("connections") == n)


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_gets_exactly_the_missed_events_in_order(streams, client, how):
    cid = f"resume-{how}"
    s = streams.raw(f"/sse/subscribe/{cid}?group=news")
    assert subscribed(client, cid)
    seen = publish(client, to=cid, data="seen")
    assert s.read_until(b"data: seen\n\n")
    s.close()
    assert wait_for(lambda: client.get(f"/sse/clients/{cid}").status_code == 404)
    missed = [
        publish(client, to=cid, data="m1"),
        publish(client, to="someone-else", data="not mine"),
        publish(client, group="news", data="m2"),
        publish(client, prefix="resume-", data="m3"),
        publish(client, broadcast=True, data="m4"),
        publish(client, group="sports", data="not mine either"),
    ]
    if how == "header":
        again = streams.raw(f"/sse/subscribe/{cid}?group=news", {"Last-Event-ID": seen})
    else:
        again = streams.raw(f"/sse/subscribe/{cid}?group=news&lastEventId={seen}")
    assert subscribed(client, cid)
    live = publish(client, to=cid, data="live")
    assert again.read_until(b"data: live\n\n")
    events = again.events()
    assert [e.data for e in events] == ["m1", "m2", "m3", "m4", "live"]
    assert [e.id for e in events] == [missed[0], missed[2], missed[3], missed[4], live]


def test_resume_from_the_newest_id_replays_nothing(streams, client):
    s = streams.raw("/sse/subscribe/resume-newest")
    assert subscribed(client, "resume-newest")
    newest = publish(client, to="resume-newest", data="a")
    assert s.read_until(b"data: a\n\n")
    s.close()
    again = streams.raw("/sse/subscribe/resume-newest", {"Last-Event-ID": newest})
    assert subscribed(client, "resume-newest")
    publish(client, to="resume-newest", data="b")
    assert again.read_until(b"data: b\n\n")
    assert [e.data for e in again.events()] == ["b"]


@pytest.mark.parametrize("bad_id", ["123-456", "garbage", "x" * 64, "1-1.close.x"])
def test_unknown_id_starts_with_reset(streams, client, bad_id):
    s = streams.raw("/sse/subscribe/resume-unknown", {"Last-Event-ID": bad_id})
    assert s.read_until(b"event: reset\n")
    assert s.read_until(b"\n\n")
    reset = s.events()[0]
    assert reset.event == "reset"
    assert json.loads(reset.data) == {"reason": "unknown-id", "lastEventId": bad_id}
    assert reset.id  # the head of the history, so the next reconnect does not reset again
    publish(client, to="resume-unknown", data="after reset")
    assert s.read_until(b"data: after reset\n\n")


def test_close_ends_every_stream_and_the_reconnect_gets_204(server, streams, client):
    tabs = [streams.raw("/sse/subscribe/close-me") for _ in range(2)]
    other = streams.raw("/sse/subscribe/close-other")
    assert subscribed(client, "close-me", 2)
    reply = client.post("/sse/close/close-me")
    assert reply.status_code == 200 and reply.json() == {"closed": 2}
    for tab in tabs:
        assert tab.wait_closed(5), "the stream must end after event: close"
        close_event = tab.events()[-1]
        assert close_event.event == "close"
    close_id = tabs[0].events()[-1].id
    assert wait_for(lambda: client.get("/sse/clients/close-me").status_code == 404)
    # What the browser does next: reconnect with the close event's id. 204 stops EventSource for good.
    reconnect = RawStream(server.port, "/sse/subscribe/close-me", {"Last-Event-ID": close_id})
    assert reconnect.status == 204
    reconnect.close()
    # A fresh subscribe (no id) is accepted as usual; the other client never noticed: no close, no end.
    fresh = streams.raw("/sse/subscribe/close-me")
    assert fresh.status == 200
    assert_next_is_marker(other, publisher(client.post, to="close-other"))
    assert not other.closed


def test_close_forms(client, streams):
    for path, method in [("/sse/close/close-get", "GET"), ("/sse/close?id=close-get", "GET"),
                         ("/sse/close?clientId=close-get", "GET")]:
        s = streams.raw("/sse/subscribe/close-get")
        assert subscribed(client, "close-get")
        assert client.request(method, path).json() == {"closed": 1}
        assert s.wait_closed(5)
    assert client.post("/sse/close/nobody-at-all").json() == {"closed": 0}
    assert client.post("/sse/close/bad%20id").status_code == 400


def test_heartbeat_on_an_idle_stream(streams, client):
    s = streams.raw("/sse/subscribe/heartbeat")
    assert s.read_until(b"retry:")
    # Two heartbeats (1 s apart here), each a comment a browser dispatches nothing for.
    assert s.read_until(b": keep-alive\n\n", 10, count=2)
    assert_next_is_marker(s, publisher(client.post, to="heartbeat"))


@pytest.fixture(scope="module")
def short_history():
    with Gunicorn(env={"PUSHSVC_HISTORY_SIZE": "5", "PUSHSVC_HEARTBEAT_SECONDS": "1"}) as gunicorn:
        yield gunicorn


def test_an_id_older_than_the_history_resets(short_history):
    import httpx

    with httpx.Client(base_url=short_history.base, timeout=5) as http:
        first = publish(http, to="old", data="0")
        for n in range(1, 8):
            publish(http, to="old", data=str(n))
        s = RawStream(short_history.port, "/sse/subscribe/old", {"Last-Event-ID": first})
        try:
            assert s.read_until(b"event: reset\n")
            assert s.read_until(b"\n\n")
            events = s.events()
            assert [e.event for e in events] == ["reset"]
            assert json.loads(events[0].data)["reason"] == "expired"
            # Never a silent, partial replay: after the reset, the live stream and nothing else.
            assert_next_is_marker(s, publisher(http.post, to="old"))
        finally:
            s.close()


def test_a_restart_makes_old_ids_unknown():
    with Gunicorn() as first:
        import httpx

        old = httpx.post(first.url("/sse/publish"), json={"to": "restart", "data": "before"}).json()["id"]
        port = first.port
    with Gunicorn(port=port) as second:
        s = RawStream(second.port, "/sse/subscribe/restart", {"Last-Event-ID": old})
        try:
            assert s.read_until(b"event: reset\n")
            assert s.read_until(b"\n\n")
            assert json.loads(s.events()[0].data)["reason"] == "unknown-id"
            with httpx.Client(base_url=second.base, timeout=10) as http:
                new = assert_next_is_marker(s, publisher(http.post, to="restart"))
            assert new != old
        finally:
            s.close()
