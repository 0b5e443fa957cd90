"""The Python API: Push mounted in an existing Flask app, publishing from requests, greenlets, threads."""

from __future__ import annotations

import httpx
import pytest

from pushsvc import InvalidInput, Push, create_app

from .helpers import wait_for
from .servers import Gunicorn
from .sse import Listener


@pytest.fixture(scope="module")
def legacy():
    with Gunicorn(app="tests.apps.legacy_app:app", health="/events/healthz") as gunicorn:
        yield gunicorn


def test_push_in_a_legacy_app(legacy):
    http = httpx.Client(base_url=legacy.base, timeout=5)
    u42 = Listener(legacy.base, "/events/subscribe/u42?group=staff")
    u7 = Listener(legacy.base, "/events/subscribe/u7")
    try:
        assert wait_for(lambda: http.get("/who").json()["count"] == 2)
        assert sorted(c["id"] for c in http.get("/who").json()["clients"]) == ["u42", "u7"]
        event_id = http.post("/orders/1001").json()["id"]
        got = u42.get()
        assert (got.event, got.data, got.id) == ("order", '{"order":1001}', event_id)
        http.post("/from-greenlet/2")
        assert u42.get().data == '{"greenlet":2}'
        http.post("/from-thread/3")
        assert u42.get().data == '{"thread":3}'
        http.post("/announce")
        assert [e.data for e in u42.take(2)] == ["all hands", "pair"]
        assert [e.data for e in u7.take(2)] == ["all hands", "pair"]
        assert http.post("/kick/u7").json() == {"closed": 1}
        assert u7.get().event == "close"
        assert wait_for(lambda: http.get("/who").json()["count"] == 1)
    finally:
        u42.close()
        u7.close()
        http.close()


def test_api_validates_like_http():
    app = create_app(broker_url="memory://")
    push: Push = app.extensions["pushsvc.push"]
    assert push.send("u1", {"n": 1}, event="order")
    for bad_call in (
        lambda: push.send("a b", "x"),
        lambda: push.send("u1", "x", event="close"),
        lambda: push.send("u1", "x", event="a\nb"),
        lambda: push.send("u1", "x" * 70_000),
        lambda: push.send_group("", "x"),
        lambda: push.send_many([], "x"),
        lambda: push.send("u1", "x", retry=-5),
    ):
        with pytest.raises((InvalidInput, ValueError)):
            bad_call()
    assert push.count() == 0 and push.clients() == []


def test_send_batch_publishes_in_order_or_not_at_all():
    app = create_app(broker_url="memory://")
    push: Push = app.extensions["pushsvc.push"]
    service = push.service
    service.start()
    conns = {}
    for client_id, groups in (("u1", ()), ("shop1-a", ("staff",)), ("u2", ())):
        sub = service.subscribe(client_id, groups)
        next(sub.body)  # the opening retry: chunk; the stream is registered now
        conns[client_id] = sub
    ids = push.send_batch([
        {"to": "u1", "data": {"n": 1}, "event": "order"},
        {"group": "staff", "data": "meeting"},
        {"prefix": "shop1-", "data": "sale"},
        {"broadcast": True, "data": "all"},
        {"to": ["u1", "u2"], "data": "pair", "retry": 500},
    ])
    assert len(ids) == 5 and ids == sorted(ids, key=lambda i: int(i.rpartition("-")[2]))
    got = {client_id: [f.data for f in _drain(service, client_id)] for client_id in conns}
    assert [b"event: order" in d for d in got["u1"]] == [True, False, False]
    assert len(got["shop1-a"]) == 3 and len(got["u2"]) == 2
    for bad, index in (([{"to": "u1", "data": "ok"}, {"to": "u1"}], 1),
                       ([{"to": "u1", "data": "ok"}, {"group": "a b", "data": "x"}], 1),
                       ([{"data": "no target"}], 0)):
        with pytest.raises(InvalidInput) as refused:
            push.send_batch(bad)
        assert refused.value.index == index
    with pytest.raises(InvalidInput):
        push.send_batch([])
    # Nothing half-published: the next frame each stream gets is this marker.
    marker = push.broadcast("marker")
    for client_id in conns:
        assert [f.event_id for f in _drain(service, client_id)] == [marker], client_id
    for sub in conns.values():
        sub.body.close()
    assert push.count() == 0


def _drain(service, client_id):
    frames = []
    for conn in service.registry.connections:
        if conn.client_id == client_id:
            while conn.queue.qsize():
                frames.append(conn.queue.get_nowait())
    return frames


def test_push_needs_an_app():
    with pytest.raises(RuntimeError, match="init_app"):
        Push().send("u1", "x")
