"""Generations of the Redis stream, in process against a private redis-server. Behind Sentinel, when
another server takes the stream over (a promoted replica, a restart from a snapshot: another replication
id), new ids sort after every id handed out before, and an id of the old generation is a reset (the new
server may lack what the old one took last); a reader that read entries the new server lacks goes on with
exactly the new ones. A single server keeps its generation across a restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pushsvc.brokers.redis.broker import RedisBroker
from pushsvc.brokers.redis.reader import Reader
from pushsvc.brokers.redis.schema import Keys, event_key, parse_event_id
from pushsvc.model import RESET_UNKNOWN, Message, Target

KEYS = Keys()


def body(text: str) -> bytes:
    return f"data: {text}\n\n".encode()


@pytest.fixture
def setup(redis_server) -> Iterator[tuple[RedisBroker, redis.Redis]]:
    admin = redis.Redis.from_url(redis_server.url)
    admin.flushall()
    broker = RedisBroker(redis_server.url, history_size=1000, history_ttl_seconds=600, follow_failover=True)
    yield broker, admin
    broker.redis.connection_pool.disconnect()
    admin.close()


def send(broker: RedisBroker, *texts: str) -> list[str]:
    return [p.id for p in broker.publish([Message(Target.clients(["a"]), body(t)) for t in texts])]


def taken_over(admin: redis.Redis) -> None:
    """As if another server now held the stream: the replication id kept beside it is not its own."""
    admin.set(KEYS.epoch, "another server")


def key(event_id: str) -> tuple[int, int, int]:
    parsed = parse_event_id(event_id)
    assert parsed is not None
    return event_key(*parsed)


def later_id(event_id: str) -> str:
    """An id the old server could have handed out after ``event_id`` (a later millisecond)."""
    generation, stream_id = parse_event_id(event_id)  # type: ignore[misc]
    return f"{generation}-{int(stream_id.split('-')[0]) + 1}-0"


def test_the_generation_stays_while_the_same_server_holds_the_stream(setup):
    broker, _ = setup
    ids = send(broker, "a", "b") + send(broker, "c")
    assert len({parse_event_id(i)[0] for i in ids}) == 1  # type: ignore[index]


def test_another_server_starts_a_larger_generation_and_old_ids_reset(setup):
    broker, admin = setup
    first, second = send(broker, "first", "second")
    lost = later_id(second)  # handed out by the old server, never replicated
    taken_over(admin)
    [third] = send(broker, "third")
    assert parse_event_id(third)[0] > parse_event_id(second)[0]  # type: ignore[index]
    assert key(first) < key(second) < key(lost) < key(third)
    # Held or not, an old id cannot be resumed from: the old server may have taken more after it.
    for old in (first, second, lost):
        replay = broker.replay(old, "a", [])
        assert replay.reset == RESET_UNKNOWN and replay.frames == [] and replay.head_id == third
    assert broker.replay(third, "a", []).frames == []
    [fourth] = send(broker, "fourth")
    assert [f.event_id for f in broker.replay(third, "a", []).frames] == [fourth]


def test_a_single_server_keeps_its_generation_across_a_restart(redis_server, setup):
    _, admin = setup
    broker = RedisBroker(redis_server.url, history_size=1000, history_ttl_seconds=600)
    try:
        [before] = send(broker, "before")
        taken_over(admin)  # a restart from its own snapshot changes the replication id too
        [after] = send(broker, "after")
        assert parse_event_id(after)[0] == parse_event_id(before)[0]  # type: ignore[index]
        assert [f.event_id for f in broker.replay(before, "a", []).frames] == [after]
    finally:
        broker.redis.connection_pool.disconnect()


def reader_for(broker: RedisBroker, url: str, got: list[str]) -> Reader:
    return Reader(url, KEYS, "test-worker", lambda target, frame: got.append(frame.event_id),
                  head=broker.head, connect_timeout=1.0)


@pytest.mark.parametrize("read_past_the_end", [False, True])
def test_a_reader_that_comes_back_to_another_server_reads_exactly_what_it_lacks(
        setup, redis_server, read_past_the_end):
    broker, admin = setup
    got: list[str] = []
    reader = reader_for(broker, redis_server.url, got)
    try:
        reader._connect()
        ids = send(broker, "a", "b")
        reader._read_once()
        assert got == ids
        if read_past_the_end:
            # It had read an entry that the new server never got.
            reader.last_id = parse_event_id(later_id(ids[-1]))[1]  # type: ignore[index]
        taken_over(admin)
        reader.connected = False
        new = send(broker, "c", "d")
        reader._connect()
        reader._read_once()
        assert got == ids + new, "nothing twice, nothing missed"
    finally:
        reader.stop()


def test_a_reader_whose_generation_is_gone_reads_the_whole_new_stream(setup, redis_server):
    broker, admin = setup
    got: list[str] = []
    reader = reader_for(broker, redis_server.url, got)
    try:
        reader._connect()
        send(broker, "old")
        reader._read_once()
        admin.delete(KEYS.stream, KEYS.generation, KEYS.epoch)  # restarted empty
        reader.connected = False
        new = send(broker, "x", "y")
        reader._connect()
        reader._read_once()
        assert got[1:] == new
    finally:
        reader.stop()
