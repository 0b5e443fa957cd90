"""Idempotency-Key in process, on both brokers: 409 while the first publish is held, the claim freed when a
publish fails, 503 when the store is unreachable, the time to live on a fake clock, what the stores keep,
and ``idempotency_key=`` in the Python API. The real-server tests are in test_idempotency.py."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import gevent.event
import pytest
import redis

from pushsvc import BrokerUnavailable, IdempotencyConflict, InvalidInput, Push, Settings, create_app
from pushsvc.brokers.memory import MemoryBroker
from pushsvc.brokers.redis import RedisBroker
from pushsvc.idempotency import IN_FLIGHT_SECONDS, Entry, MemoryIdempotency, check_key, fingerprint_body
from pushsvc.messages import compose
from pushsvc.model import Published, Target
from pushsvc.service import Service

from .helpers import FakeClock
from .servers import free_port


@pytest.fixture(params=["memory", "redis"])
def broker_url(request) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    redis_server = request.getfixturevalue("redis_server")
    redis.Redis.from_url(redis_server.url).flushall()
    yield redis_server.url


def publish(http, key: str, body: object):
    return http.post("/sse/publish", json=body, headers={"Idempotency-Key": key})


def test_a_repeat_while_the_first_is_being_published_is_409(broker_url):
    """Inputs: the first publish held inside the broker (a gevent Event), a repeat with the same body and
    one with another body meanwhile; then the repeat after the first is answered."""
    app = create_app(broker_url=broker_url)
    broker = app.extensions["pushsvc"].broker
    real_publish, entered, release = broker.publish, gevent.event.Event(), gevent.event.Event()

    def held(messages):
        entered.set()
        release.wait()
        return real_publish(messages)

    broker.publish = held
    http = app.test_client()
    body = {"to": "slow", "data": "x"}
    first = gevent.spawn(publish, app.test_client(), "k-held", body)
    assert entered.wait(10), "the first publish never reached the broker"
    busy = publish(http, "k-held", body)
    assert busy.status_code == 409 and busy.json["field"] == "Idempotency-Key"
    assert "in flight" in busy.json["error"]
    assert publish(http, "k-held", {"to": "slow", "data": "y"}).status_code == 422
    release.set()
    answered = first.get(timeout=10)
    assert answered.status_code == 202
    again = publish(http, "k-held", body)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == answered.json


def test_a_failed_publish_frees_the_key_for_its_retry(broker_url):
    """Inputs: a publish the broker refuses (503), then its retry with the same key, which publishes."""
    app = create_app(broker_url=broker_url)
    broker = app.extensions["pushsvc"].broker
    real_publish = broker.publish
    broker.publish = lambda messages: (_ for _ in ()).throw(BrokerUnavailable("down for this test"))
    http = app.test_client()
    assert publish(http, "k-fail", {"to": "f", "data": "x"}).status_code == 503
    broker.publish = real_publish
    retry = publish(http, "k-fail", {"to": "f", "data": "x"})
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers


def test_an_unreachable_store_is_503_and_publishes_nothing():
    """Inputs: a Redis URL where nothing listens; a publish with a key."""
    app = create_app(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    reply = publish(app.test_client(), "k-down", {"to": "d", "data": "x"})
    assert reply.status_code == 503 and reply.json["error"]


def test_the_key_expires_after_its_time_to_live():
    """Inputs: on a fake clock with a 60 s time to live, a repeat at 59 s (replayed), at 61 s (published
    anew, a new id); and an in-flight claim left by a publisher that died, taken again after 30 s."""
    clock = FakeClock()
    settings = Settings.load(environ={}, idempotency_ttl_seconds=60)
    service = Service(settings, MemoryBroker(history_size=100, history_ttl_seconds=600, clock=clock))
    messages = [compose(Target.clients(["ttl"]), "x", settings)]
    first, replayed = service.publish_once("k-ttl", "fp", messages)
    assert not replayed
    clock.advance(59)
    assert service.publish_once("k-ttl", "fp", messages) == (first, True)
    clock.advance(2)
    later, replayed = service.publish_once("k-ttl", "fp", messages)
    assert not replayed and later[0].id != first[0].id
    store = service.broker.idempotency
    assert store.claim("k-dead", "fp", 60).token is not None  # and its publisher never comes back
    assert store.claim("k-dead", "fp", 60).entry == Entry("fp")
    clock.advance(IN_FLIGHT_SECONDS + 1)
    assert store.claim("k-dead", "fp", 60).token is not None


def test_the_memory_store_is_bounded_and_only_the_owner_finishes_a_claim():
    """Inputs: four keys in a store of three; a record and a release with a stranger's token."""
    store = MemoryIdempotency(clock=FakeClock(), max_keys=3)
    tokens = [store.claim(f"k{n}", "fp", 60).token for n in range(4)]
    assert len(store) == 3
    store.record("k1", "not-the-owner", Entry("fp", (Published("1-1", 0),)), 60)
    store.release("k2", "not-the-owner")
    assert store.claim("k1", "fp", 60).entry == Entry("fp")
    assert store.claim("k2", "fp", 60).entry == Entry("fp")
    store.record("k3", tokens[3], Entry("fp", (Published("1-3", 2),)), 60)
    assert store.claim("k3", "fp", 60).entry == Entry("fp", (Published("1-3", 2),))
    assert store.claim("k0", "fp", 60).token is not None  # the oldest was forgotten


def test_redis_keeps_a_fingerprint_not_the_body_under_the_namespace_with_its_ttl(redis_server):
    """Inputs: a claim, then its answer, on the broker's Redis; the key's value and PTTL read directly."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.flushall()
    store = RedisBroker(redis_server.url, history_size=10, history_ttl_seconds=60).idempotency
    fp = fingerprint_body("application/json", b'{"data": "secret body"}')
    claim = store.claim("k redis", fp, 3600)
    value = admin.get("{pushsvc}:idem:k redis")
    assert value.startswith(b"~") and fp.encode() in value
    assert 0 < admin.pttl("{pushsvc}:idem:k redis") <= IN_FLIGHT_SECONDS * 1000
    store.record("k redis", claim.token, Entry(fp, (Published("5-1-0", 3),)), 3600)
    value = admin.get("{pushsvc}:idem:k redis")
    assert b"secret" not in value and 3_590_000 < admin.pttl("{pushsvc}:idem:k redis") <= 3_600_000
    assert store.claim("k redis", fp, 3600).entry == Entry(fp, (Published("5-1-0", 3),))
    store.release("k redis", claim.token)  # too late: the answer stays
    assert admin.exists("{pushsvc}:idem:k redis")


@pytest.mark.parametrize("key", ["", "k" * 256, "a\x01b", "a\x7fb", "tab\there", "caf\u00e9", 42, None])
def test_check_key_refuses_what_is_not_1_to_255_printable_ascii(key):
    with pytest.raises(InvalidInput) as refused:
        check_key(key)
    assert refused.value.status == 400 and refused.value.field == "Idempotency-Key"


def test_the_app_refuses_control_bytes_gunicorn_would_stop_first():
    http = create_app().test_client()
    for key in ("a\x01b", "a\x7fb"):
        reply = publish(http, key, {"to": "c", "data": "x"})
        assert reply.status_code == 400 and reply.json["field"] == "Idempotency-Key"


def test_the_python_api_takes_idempotency_key(broker_url):
    """Inputs: ``send`` twice with one key (one id), ``send`` with other data and ``broadcast`` under that
    key (422), ``send_batch`` twice with a key, every send method with a key, a bad key (400)."""
    app = create_app(broker_url=broker_url)
    push: Push = app.extensions["pushsvc.push"]
    service = app.extensions["pushsvc"]
    first = push.send("api-u1", {"n": 1}, event="order", idempotency_key="order-1")
    published = service.stats.published["to"]
    assert push.send("api-u1", {"n": 1}, event="order", idempotency_key="order-1") == first
    assert service.stats.published["to"] == published, "a repeat publishes nothing"
    for other in (lambda: push.send("api-u1", {"n": 2}, event="order", idempotency_key="order-1"),
                  lambda: push.broadcast({"n": 1}, event="order", idempotency_key="order-1")):
        with pytest.raises(IdempotencyConflict) as conflict:
            other()
        assert conflict.value.status == 422 and isinstance(conflict.value, InvalidInput)
    batch = [{"to": "api-u1", "data": "a"}, {"group": "api-g", "data": "b"}]
    ids = push.send_batch(batch, idempotency_key="batch-1")
    assert push.send_batch(batch, idempotency_key="batch-1") == ids and len(set(ids)) == 2
    calls = [lambda k: push.send_many(["a", "b"], "x", idempotency_key=k),
             lambda k: push.send_group("g", "x", idempotency_key=k),
             lambda k: push.send_prefix("p", "x", idempotency_key=k)]
    for n, call in enumerate(calls):
        assert call(f"each-{n}") == call(f"each-{n}")
    with pytest.raises(InvalidInput) as bad:
        push.send("api-u1", "x", idempotency_key="\n")
    assert bad.value.status == 400
