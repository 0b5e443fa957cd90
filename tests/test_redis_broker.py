"""The Redis broker in process, against a private redis-server: ids, replay, presence counts, tickets."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import redis

from pushsvc.brokers.base import BrokerUnavailable
from pushsvc.brokers.redis.broker import RedisBroker
from pushsvc.brokers.redis.check import check_reachable
from pushsvc.brokers.redis.reader import Reader, write_canary
from pushsvc.config import ConfigError
from pushsvc.model import CLOSE_MARK, RESET_EXPIRED, RESET_UNKNOWN, Message, Target
from pushsvc.registry import Connection, Registry

from .servers import free_port


def publish(broker, messages):
    """Publish through the broker; the ids it answered."""
    return [p.id for p in broker.publish(messages)]


def online(broker, target):
    """The open streams of the whole service a target addresses, as a publish to it answers."""
    return broker.publish([Message(target, b"data: count\n")])[0].online

ID = re.compile(r"[0-9A-Za-z._-]{1,64}")


def body(text: str) -> bytes:
    return f"data: {text}\n\n".encode()


@pytest.fixture
def make(redis_server) -> Iterator:
    """Brokers on a freshly emptied private Redis; each may get a registry as if it were a worker."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.flushall()
    made: list[RedisBroker] = []

    def make_broker(*, registry: Registry | None = None, **kw) -> RedisBroker:
        options = {"history_size": 1000, "history_ttl_seconds": 600, **kw}
        broker = RedisBroker(redis_server.url, **options)
        if registry is not None:
            broker.start(registry)
            broker.presence.attach(registry)
        made.append(broker)
        return broker

    yield make_broker
    for broker in made:
        broker.redis.connection_pool.disconnect()
    admin.close()


def connect(registry: Registry, client_id: str, *groups: str) -> Connection:
    conn = Connection(client_id, groups, queue_size=10)
    registry.add(conn)
    return conn


def test_ids_are_short_safe_increasing_and_mark_closes(make):
    broker = make()
    ids = publish(broker, [Message(Target.everyone(), body(str(i))) for i in range(50)])
    ids += publish(broker, [Message(Target.clients(["a"]), body("bye"), close=True)])
    assert all(ID.fullmatch(i) for i in ids)
    keys = [tuple(int(p) for p in i.removesuffix(CLOSE_MARK).split("-")) for i in ids]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert ids[-1].endswith(CLOSE_MARK) and not any(i.endswith(CLOSE_MARK) for i in ids[:-1])


def test_replay_gives_what_the_connection_would_have_received(make):
    broker = make()
    start = publish(broker, [Message(Target.clients(["x"]), body("start"))])[0]
    ids = publish(broker, [
        Message(Target.clients(["a", "b"]), body("to-a-b")),
        Message(Target.clients(["b"]), body("to-b")),
        Message(Target.group("g"), body("group-g")),
        Message(Target.prefix("a"), body("prefix-a")),
        Message(Target.everyone(), body("all")),
        Message(Target.clients(["a"]), body("close-a"), close=True),
    ])
    replay = broker.replay(start, "a", ["g"])
    assert replay.reset is None and replay.head_id == ids[-1].removesuffix(CLOSE_MARK)
    assert [f.event_id for f in replay.frames] == [ids[0], ids[2], ids[3], ids[4], ids[5]]
    assert replay.frames[-1].end and not any(f.end for f in replay.frames[:-1])
    assert replay.frames[0].data == f"id: {ids[0]}\n".encode() + body("to-a-b")
    assert [f.key for f in replay.frames] == sorted(f.key for f in replay.frames)
    assert [f.event_id for f in broker.replay(ids[3], "b", []).frames] == [ids[4]]
    assert broker.replay(ids[-1], "a", []).frames == []


def test_replay_pages_through_a_long_gap(make):
    broker = make(history_size=5000)
    first = publish(broker, [Message(Target.everyone(), body("first"))])[0]
    ids = publish(broker, [Message(Target.everyone(), body(str(i))) for i in range(2500)])
    assert [f.event_id for f in broker.replay(first, "anyone", []).frames] == ids


@pytest.mark.parametrize("bad", ["", "garbage", "1-2", "1-2-3-4", "12-1-0", "\uff19-1-1", "1-1-1.close"])
def test_unknown_ids_reset(make, bad):
    broker = make()
    head = publish(broker, [Message(Target.everyone(), body("x"))])[0]
    replay = broker.replay(bad, "a", [])
    assert replay.reset == RESET_UNKNOWN and replay.frames == [] and replay.head_id == head


def test_an_id_from_the_future_or_another_generation_resets(make, redis_server):
    broker = make()
    head = publish(broker, [Message(Target.everyone(), body("x"))])[0]
    generation, ms, _ = head.split("-")
    assert broker.replay(f"{generation}-{int(ms) + 10_000}-0", "a", []).reset == RESET_UNKNOWN
    redis.Redis.from_url(redis_server.url).flushall()  # Redis restarted empty
    again = publish(broker, [Message(Target.everyone(), body("y"))])[0]
    assert int(again.split("-")[0]) > int(generation)
    assert broker.replay(head, "a", []).reset == RESET_UNKNOWN


def test_events_older_than_the_ttl_reset_as_expired(make):
    broker = make(history_ttl_seconds=0.2)
    old = publish(broker, [Message(Target.everyone(), body("old"))])[0]
    publish(broker, [Message(Target.everyone(), body("mid"))])
    time.sleep(0.3)
    fresh = publish(broker, [Message(Target.everyone(), body("fresh"))])
    replay = broker.replay(old, "a", [])
    assert replay.reset == RESET_EXPIRED and replay.head_id == fresh[0]


def test_resume_from_the_head_of_an_empty_stream(make):
    broker = make()
    head = broker.replay("junk", "a", []).head_id
    assert head.endswith("-0-0")
    assert broker.replay(head, "a", []).frames == []
    ids = publish(broker, [Message(Target.everyone(), body("1")), Message(Target.everyone(), body("2"))])
    assert [f.event_id for f in broker.replay(head, "a", []).frames] == ids


def test_presence_and_online_span_workers(make):
    one, two = Registry(), Registry()
    w1, w2 = make(registry=one), make(registry=two)
    script = make()  # a process with no streams
    connect(one, "a", "g1")
    connect(two, "a", "g2")
    connect(two, "b")
    connect(two, "ab", "g1")
    w1.presence.flush()
    w2.presence.flush()
    for broker in (w1, w2, script):
        clients = broker.clients()
        assert list(clients) == ["a", "ab", "b"]
        assert clients["a"].connections == 2 and clients["a"].groups == {"g1", "g2"}
        assert broker.client("b").connections == 1 and broker.client("zz") is None
        assert online(broker, Target.everyone()) == 4
        assert online(broker, Target.group("g1")) == 2
        assert online(broker, Target.clients(["a", "b", "c"])) == 3
        assert online(broker, Target.prefix("a")) == 3
    counted = script.publish([Message(Target.group("g2"), body("x")),
                              Message(Target.clients(["ab"]), body("y"))])
    assert [p.online for p in counted] == [1, 1]


def test_presence_of_a_worker_that_stopped_refreshing_disappears(make, redis_server):
    one, two = Registry(), Registry()
    w1, w2 = make(registry=one), make(registry=two)
    connect(one, "mine")
    connect(two, "theirs")
    w1.presence.flush()
    w2.presence.flush()
    assert set(w1.clients()) == {"mine", "theirs"}
    # What the TTL does to a killed worker, without waiting for it.
    redis.Redis.from_url(redis_server.url).delete(w2.keys.worker_groups(w2.worker),
                                                  w2.keys.worker_clients(w2.worker))
    assert set(w1.clients()) == {"mine"}
    assert online(w1, Target.everyone()) == 1
    w2.presence.refresh()  # the worker is alive after all: it writes itself back
    assert set(w1.clients()) == {"mine", "theirs"}


def test_presence_follows_disconnects(make):
    one = Registry()
    worker, script = make(registry=one), make()
    conn = connect(one, "leaver", "g")
    connect(one, "stayer", "g")
    worker.presence.flush()
    one.remove(conn)
    worker.presence.flush()
    assert list(script.clients()) == ["stayer"]
    assert online(script, Target.group("g")) == 1


def test_tickets_are_single_use_and_expire(make):
    a, b = make(), make()
    a.tickets.put("t-1", "alice", 30)
    assert b.tickets.take("t-1") == "alice"
    assert a.tickets.take("t-1") is None
    a.tickets.put("t-2", "bob", 0.05)
    time.sleep(0.1)
    assert b.tickets.take("t-2") is None


def test_unreachable_redis_raises_broker_unavailable_quickly():
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", history_size=10, history_ttl_seconds=10)
    started = time.monotonic()
    for call in (lambda: publish(broker, [Message(Target.everyone(), body("x"))]),
                 lambda: broker.replay("1-1-1", "a", []), broker.clients, lambda: broker.client("a"),
                 lambda: broker.tickets.take("t")):
        with pytest.raises(BrokerUnavailable):
            call()
    # Each refused connect fails at once, where redis-py's default retry (ten attempts, backoff up to 1 s)
    # would keep a publisher's request waiting about two seconds per call: ten for these five.
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:1/notadb", "redis:///0",
                                 "http://127.0.0.1:6380/0"])
def test_malformed_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="PUSHSVC_BROKER_URL"):
        RedisBroker(url, history_size=10, history_ttl_seconds=10)
    with pytest.raises(ConfigError, match="PUSHSVC_BROKER_URL"):
        check_reachable(url)


def test_unreachable_url_check_names_the_setting_without_the_password():
    with pytest.raises(ConfigError, match="cannot be reached") as error:
        check_reachable(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    assert "s3cret" not in str(error.value) and "\n" not in str(error.value)


def test_reader_resumes_after_its_last_id_and_reads_a_new_generation_from_the_start(make, redis_server):
    broker = make()
    publish(broker, [Message(Target.everyone(), body("before the reader"))])
    got: list = []
    reader = Reader(redis_server.url, broker.keys, "w-test", lambda target, frame: got.append(frame),
                    head=broker.head, connect_timeout=1)
    try:
        reader._connect()  # what start() does first: begin at the stream's head
        ids = publish(broker, [Message(Target.everyone(), body("one")),
                              Message(Target.clients(["a"]), body("bye"), close=True)])
        reader._read_once()
        assert [f.event_id for f in got] == ids and [f.end for f in got] == [False, True]
        assert got[0].data == f"id: {ids[0]}\n".encode() + body("one")

        reader.connected = False  # the connection dropped: same generation, resume after the last id
        reader._connect()
        more = publish(broker, [Message(Target.everyone(), body("two"))])
        reader._read_once()
        assert [f.event_id for f in got] == ids + more

        redis.Redis.from_url(redis_server.url).flushall()  # Redis came back empty
        fresh = publish(broker, [Message(Target.everyone(), body("three"))])
        reader._connect()
        reader._read_once()
        assert [f.event_id for f in got] == ids + more + fresh
        assert got[-1].key > got[-2].key
    finally:
        reader.stop()


def test_the_canary_read_back_is_what_health_follows(make, redis_server):
    broker = make()
    reader = Reader(redis_server.url, broker.keys, "w-canary", lambda target, frame: None, head=broker.head,
                    connect_timeout=1)
    try:
        reader._connect()
        reader.started = True  # as if start() had run: healthy() now follows the canary
        reader.canary_seen -= 60
        assert not reader.healthy()
        write_canary(broker.redis, broker.keys, "w-canary")
        reader._read_once()
        assert reader.healthy() and reader.canary_rtt is not None and reader.canary_rtt < 1
        assert reader.state()["reader"] == "connected"
    finally:
        reader.stop()
