"""The seams between the service, the brokers and the HTTP layer: one admission path that counts every
refusal, one message builder for every route, and broker life cycles that can be repeated."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import typing

import pytest

from pushsvc import Push, create_app
from pushsvc import config as config_module
from pushsvc.brokers.memory import MemoryBroker
from pushsvc.model import Message, Target
from pushsvc.registry import Connection, Registry

from .servers import ROOT

SECRET = "seams-test-secret-0123456789-abcdefghijklmnop"


def test_every_refusal_is_decided_by_the_service_and_counted_by_reason():
    app = create_app(jwt_secret=SECRET)
    service = app.extensions["pushsvc"]
    http = app.test_client()
    assert http.get("/sse/subscribe/u1").status_code == 401
    assert http.get("/sse/subscribe/u1?token=not-a-jwt").status_code == 401
    assert http.get("/sse/subscribe/u1?ticket=unknown").status_code == 401
    assert service.stats.refused["unauthorized"] == 3
    closed = http.get("/sse/subscribe/u1", headers={"Last-Event-ID": "1-2.close"})
    assert closed.status_code == 401  # credentials come first: a closed id is no way around them
    assert service.stats.refused["unauthorized"] == 4 and service.stats.refused["closed"] == 0


def test_a_reconnect_after_close_and_a_full_worker_are_counted():
    app = create_app(max_connections=1)
    service = app.extensions["pushsvc"]
    http = app.test_client()
    assert http.get("/sse/subscribe/u1", headers={"Last-Event-ID": "1-2.close"}).status_code == 204
    assert service.stats.refused["closed"] == 1
    service.registry.add(Connection("someone", queue_size=10))  # the worker's one stream slot, taken
    busy = http.get("/sse/subscribe/u2", headers={"Last-Event-ID": "7-1"})
    assert busy.status_code == 200 and b"event: busy" in busy.data
    assert b"id: 7-1\n" in busy.data  # the resume point survives the refusal
    assert service.stats.refused["full"] == 1


def test_the_python_api_and_http_publish_the_same_bytes():
    app = create_app()
    push: Push = app.extensions["pushsvc.push"]
    service = app.extensions["pushsvc"]
    data = ["é\r\nline two", 1001, {"a": None}]  # no object with two keys: the test client sorts them
    with app.app_context():
        first = push.send("u1", data, event="order", retry=2500)
    reply = app.test_client().post("/sse/publish", json={"to": "u1", "data": data, "event": "order",
                                                         "retry": 2500})
    second = reply.json["id"]
    frames = service.broker.replay(f"{service.broker.epoch}-0", "u1", []).frames
    bodies = [f.data.removeprefix(f"id: {i}\n".encode()) for f, i in zip(frames, [first, second],
                                                                          strict=True)]
    assert bodies[0] == bodies[1]
    assert b'data: ["\xc3\xa9\\r\\nline two",1001,{"a":null}]\n' in bodies[0]


def test_settings_are_converted_by_their_resolved_type():
    # typing.Optional[str] and str | None are one type: both get the optional-text converter.
    assert config_module._CONVERTERS[typing.Optional[str]] is config_module._CONVERTERS[str | None]  # noqa: UP045
    assert config_module.Settings.load(environ={"PUSHSVC_JWT_SECRET": ""}).jwt_secret is None
    hints = typing.get_type_hints(config_module.Settings)
    assert all(kind in config_module._CONVERTERS for kind in hints.values())


def test_the_memory_broker_stops_and_starts_again():
    broker = MemoryBroker(history_size=10, history_ttl_seconds=60)
    first, second = Registry(), Registry()
    broker.start(first)
    broker.start(first)
    conn = Connection("u1", queue_size=10)
    first.add(conn)
    assert broker.publish([Message(Target.clients(["u1"]), b"data: a\n")])[0].online == 1
    broker.stop()
    broker.stop()
    broker.start(second)
    late = Connection("u1", queue_size=10)
    second.add(late)
    assert broker.publish([Message(Target.clients(["u1"]), b"data: b\n")])[0].online == 1
    assert conn.queue.qsize() == 1 and late.queue.qsize() == 1


# Under gevent, as in a worker: the reader greenlet really reads from Redis.
_REDIS_LIFECYCLE = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, sys, gevent, redis
    from pushsvc.brokers.redis import RedisBroker
    from pushsvc.model import Message, Target
    from pushsvc.registry import Connection, Registry

    broker = RedisBroker(sys.argv[1], history_size=100, history_ttl_seconds=60, namespace="seams")
    registry = Registry()

    def serve(client_id):
        conn = Connection(client_id, queue_size=100)
        conn.skip_through(broker.on_subscribe(conn))
        registry.add(conn)
        return conn

    def publish_and_wait(conn, text):
        broker.publish([Message(Target.everyone(), f"data: {text}\\n".encode())])
        with gevent.Timeout(10):
            return conn.queue.get().data.decode()

    report = {}
    broker.start(registry)
    broker.start(registry)
    one = serve("one")
    report["first"] = publish_and_wait(one, "first")
    broker.stop()
    broker.stop()
    report["stopped"] = broker.reader is None and broker.health() is not None
    broker.start(registry)
    two = serve("two")
    report["again"] = publish_and_wait(two, "again")
    # A second reader would queue a second "again" ahead of this marker: each reads the stream in order.
    report["marker"] = publish_and_wait(two, "marker")
    report["one"] = [one.queue.get_nowait().data.decode() for _ in range(one.queue.qsize())]
    names = [c.get("name", "") for c in redis.Redis.from_url(sys.argv[1]).client_list()]
    report["readers"] = sum(name.startswith("pushsvc-reader:") for name in names)
    report["presence_listeners"] = registry.listeners.count(broker.presence._on_change)
    broker.stop()
    print(json.dumps(report))
""")


def test_the_redis_broker_stops_and_starts_again_with_one_reader(redis_server):
    done = subprocess.run([sys.executable, "-c", _REDIS_LIFECYCLE, redis_server.url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["first"].endswith("data: first\n") and report["again"].endswith("data: again\n")
    assert report["stopped"] is True
    # Nothing arrives twice: "two" got the marker next, "one" (still registered) each event once.
    assert report["marker"].endswith("data: marker\n")
    assert [frame.rpartition("data: ")[2] for frame in report["one"]] == ["again\n", "marker\n"]
    assert report["readers"] == 1
    assert report["presence_listeners"] == 1


@pytest.mark.parametrize("name", ["Push", "create_app", "Event", "Settings", "BrokerUnavailable",
                                  "InvalidInput", "ConfigError"])
def test_public_names_resolve_lazily(name):
    import pushsvc

    assert name in dir(pushsvc) and getattr(pushsvc, name).__name__ == name
