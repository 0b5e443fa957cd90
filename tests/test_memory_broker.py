"""The in-memory broker's ids, history and resume rules, in process."""

from __future__ import annotations

from pushsvc import wire
from pushsvc.brokers.memory import MemoryBroker
from pushsvc.model import RESET_EXPIRED, RESET_UNKNOWN, Message, Target, is_close_id
from pushsvc.registry import Registry

from .helpers import FakeClock


def publish(broker, messages):
    """Publish through the broker; the ids it answered."""
    return [p.id for p in broker.publish(messages)]


def message(target: Target, text: str, close: bool = False) -> Message:
    return Message(target, wire.encode_body(text), close=close)


def broker(size: int = 100, ttl: float = 600, clock: FakeClock | None = None) -> MemoryBroker:
    b = MemoryBroker(history_size=size, history_ttl_seconds=ttl, clock=clock or FakeClock())
    b.start(Registry())
    return b


def test_ids_increase_and_carry_the_epoch():
    b = broker()
    ids = publish(b, [message(Target.everyone(), "a"), message(Target.everyone(), "b")])
    ids += publish(b, [message(Target.everyone(), "c")])
    assert ids == [f"{b.epoch}-1", f"{b.epoch}-2", f"{b.epoch}-3"]


def test_replay_gives_what_the_connection_would_have_received():
    b = broker()
    first = publish(b, [message(Target.clients(["u1"]), "start")])[0]
    publish(b, [
        message(Target.clients(["u2"]), "not-mine"),
        message(Target.clients(["u1", "u3"]), "mine"),
        message(Target.group("g"), "group"),
        message(Target.prefix("u"), "prefix"),
        message(Target.everyone(), "all"),
    ])
    replay = b.replay(first, "u1", ["g"])
    assert replay.reset is None
    assert [f.data.split(b"data: ")[1] for f in replay.frames] == [b"mine\n\n", b"group\n\n", b"prefix\n\n",
                                                                   b"all\n\n"]
    assert b.replay(replay.frames[-1].event_id, "u1", ["g"]).frames == []


def test_unknown_ids_reset():
    b = broker()
    publish(b, [message(Target.everyone(), "x")])
    for bad in ["nonsense", f"{b.epoch - 1}-1", f"{b.epoch}-99", f"{b.epoch}-", f"{b.epoch}-\uff11"]:
        replay = b.replay(bad, "u1", [])
        assert replay.reset == RESET_UNKNOWN, bad
        assert replay.head_id == f"{b.epoch}-1"


def test_ids_older_than_the_history_reset():
    b = broker(size=3)
    ids = publish(b, [message(Target.everyone(), str(n)) for n in range(6)])
    assert b.replay(ids[0], "u", []).reset == RESET_EXPIRED
    assert b.replay(ids[1], "u", []).reset == RESET_EXPIRED
    replay = b.replay(ids[2], "u", [])
    assert replay.reset is None and len(replay.frames) == 3


def test_ttl_expires_history():
    clock = FakeClock()
    b = broker(clock=clock)
    ids = publish(b, [message(Target.everyone(), "old")])
    publish(b, [message(Target.everyone(), "old2")])
    clock.advance(601)
    assert b.replay(ids[0], "u", []).reset == RESET_EXPIRED
    # Nothing retained, but the client saw the newest event: nothing is missing.
    assert b.replay(f"{b.epoch}-2", "u", []).reset is None


def test_expired_events_leave_memory_as_new_ones_come():
    clock = FakeClock()
    b = broker(size=10_000, ttl=10, clock=clock)
    for _ in range(100):
        publish(b, [message(Target.everyone(), "tick")])
        clock.advance(1)
    # Ten seconds of events are kept (the eleventh is exactly on the horizon), not all 100.
    assert len(b.history) == 11
    ids = publish(b, [message(Target.everyone(), "last")])
    assert len(b.replay(f"{b.epoch}-95", "u", []).frames) == 6
    assert b.replay(f"{b.epoch}-80", "u", []).reset == RESET_EXPIRED
    assert ids[0] == f"{b.epoch}-101"


def test_close_events_are_marked_and_end_the_stream():
    b = broker()
    before = publish(b, [message(Target.everyone(), "x")])[0]
    close_id = publish(b, [message(Target.clients(["u1"]), "bye", close=True)])[0]
    assert is_close_id(close_id)
    replay = b.replay(before, "u1", [])
    assert replay.frames[-1].end and replay.frames[-1].event_id == close_id
    assert b.replay(before, "u2", []).frames == []
    assert b.replay(close_id, "u1", []).reset is None


def test_tickets_expire_by_the_brokers_clock():
    clock = FakeClock()
    b = broker(clock=clock)
    b.tickets.put("t-1", "alice", 30)
    b.tickets.put("t-2", "bob", 30)
    assert b.tickets.take("t-1") == "alice"
    assert b.tickets.take("t-1") is None
    clock.advance(31)
    assert b.tickets.take("t-2") is None
