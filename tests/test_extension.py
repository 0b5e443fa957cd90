"""The Python API: Push mounted in an existing Flask app, publishing from requests, greenlets, threads."""

from __future__ import annotations

import httpx
import pytest

from pushsvc import InvalidInput, Push, create_app

from .conftest import wait_for
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


def test_push_needs_an_app():
    with pytest.raises(RuntimeError, match="init_app"):
        Push().send("u1", "x")
