"""``PUSHSVC_REDIS_MIN_REPLICAS``: a publish is answered only once the replicas hold it (Redis WAIT), is
refused with nothing stored when too few replicas are in sync, and says so when they did not confirm in
time; against a private master and its replica."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest
import redis

from pushsvc.brokers.base import BrokerUnavailable, NotReplicated
from pushsvc.brokers.redis.broker import RedisBroker
from pushsvc.model import Message, Target

from .helpers import wait_for
from .redis_ha import RedisNode
from .servers import Gunicorn, RedisServer

STREAM = "{pushsvc}:events"


def message(text: str) -> list[Message]:
    return [Message(Target.clients(["a"]), f"data: {text}\n\n".encode())]


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[RedisNode, RedisNode]]:
    master = RedisNode()
    replica = RedisNode(replica_of=master.port)
    try:
        master.start()
        replica.start()
        def in_sync() -> bool:
            info = master.client().info("replication")
            return any(isinstance(v, dict) and v.get("state") == "online" for v in info.values())
        assert wait_for(in_sync, 20)
        yield master, replica
    finally:
        replica.cleanup()
        master.cleanup()


def broker_on(server: RedisServer, replicas: int) -> RedisBroker:
    return RedisBroker(server.url, history_size=1000, history_ttl_seconds=600, min_replicas=replicas)


def test_without_replicas_a_publish_that_needs_one_is_refused_and_stores_nothing(redis_server):
    redis.Redis.from_url(redis_server.url).flushall()
    broker = broker_on(redis_server, 1)
    with pytest.raises(BrokerUnavailable) as error:
        broker.publish(message("nowhere"))
    assert not isinstance(error.value, NotReplicated)
    assert redis.Redis.from_url(redis_server.url).xlen(STREAM) == 0


def test_with_a_replica_in_sync_the_event_is_on_it_when_the_publish_returns(pair):
    master, replica = pair
    broker = broker_on(master, 1)
    confirmed = 0
    for i in range(20):
        try:
            [published] = broker.publish(message(f"n{i}"))
        except BrokerUnavailable:  # a loaded machine's replica slower than the wait: a 503, allowed
            continue
        confirmed += 1
        stream_id = published.id.split("-", 1)[1]
        # No waiting here: WAIT confirmed it before the publish returned.
        assert len(replica.client().xrange(STREAM, stream_id, stream_id)) == 1
    assert confirmed >= 10, f"only {confirmed} of 20 publishes confirmed by the replica"


def test_a_replica_that_does_not_confirm_in_time_is_a_503_that_says_the_event_may_arrive(pair):
    master, replica = pair
    server = Gunicorn(env={"PUSHSVC_BROKER_URL": master.url, "PUSHSVC_REDIS_MIN_REPLICAS": "1"})
    publish = server.url("/sse/publish")
    with server:
        assert httpx.post(publish, json={"to": "a", "data": "ok"}, timeout=10).status_code == 202
        # Listed as in sync for some seconds more, it acknowledges nothing while stopped.
        replica.signal(signal.SIGSTOP)
        try:
            reply = httpx.post(publish, json={"to": "a", "data": "late"}, timeout=10)
        finally:
            replica.signal(signal.SIGCONT)
        assert reply.status_code == 503
        assert reply.json() == {"error": NotReplicated.answer}
