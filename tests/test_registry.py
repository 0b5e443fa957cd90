"""The registry in process: who gets a frame, and what happens to a connection that falls behind."""

from __future__ import annotations

import pytest

from pushsvc.model import Frame, Target
from pushsvc.registry import Connection, Registry


def make(registry: Registry, client_id: str, groups=(), size: int = 10, cut=None) -> Connection:
    conn = Connection(client_id, groups, queue_size=size, cut=cut)
    registry.add(conn)
    return conn


def received(conn: Connection) -> list[bytes]:
    out = []
    while conn.queue.qsize():
        out.append(conn.queue.get_nowait().data)
    return out


def test_targets_select_the_right_connections():
    r = Registry()
    a1, a2 = make(r, "shop1-a"), make(r, "shop1-a", ["admins"])
    b = make(r, "shop1-b", ["admins"])
    c = make(r, "shop10")
    d = make(r, "shop2-x")
    assert r.dispatch(Target.clients(["shop1-a"]), Frame(b"to")) == 2
    assert r.dispatch(Target.group("admins"), Frame(b"group")) == 2
    assert r.dispatch(Target.prefix("shop1-"), Frame(b"prefix")) == 3
    assert r.dispatch(Target.prefix("shop1"), Frame(b"prefix2")) == 4
    assert r.dispatch(Target.everyone(), Frame(b"all")) == 5
    assert received(a1) == [b"to", b"prefix", b"prefix2", b"all"]
    assert received(a2) == [b"to", b"group", b"prefix", b"prefix2", b"all"]
    assert received(b) == [b"group", b"prefix", b"prefix2", b"all"]
    assert received(c) == [b"prefix2", b"all"]
    assert received(d) == [b"all"]
    assert r.delivered == {"to": 2, "group": 2, "prefix": 7, "all": 5}


def test_counts_and_listing_follow_connects_and_disconnects():
    r = Registry()
    a1, a2 = make(r, "a", ["g1"]), make(r, "a", ["g2"])
    make(r, "b")
    assert r.count(Target.clients(["a", "b", "zz"])) == 3
    assert r.count(Target.group("g1")) == 1
    assert {k: v.to_json() for k, v in r.clients().items()} == {
        "a": {"id": "a", "connections": 2, "groups": ["g1", "g2"]},
        "b": {"id": "b", "connections": 1, "groups": []},
    }
    r.remove(a1)
    r.remove(a2)
    r.remove(a2)  # twice is harmless
    assert r.client("a") is None
    assert list(r.clients()) == ["b"]
    assert r.count(Target.group("g1")) == 0
    assert r.count(Target.prefix("a")) == 0


def test_a_full_queue_cuts_that_connection_only():
    cut = []
    slow_reasons = []
    r = Registry(on_slow=lambda conn, reason: slow_reasons.append((conn.client_id, reason)))
    slow = make(r, "slow", size=2, cut=lambda: cut.append("slow"))
    fast = make(r, "fast", size=10)
    addressed = []
    for n in range(3):
        addressed.append(r.dispatch(Target.everyone(), Frame(b"%d" % n)))
        received(fast)
    # The slow one was open when the third event came: it counts, though it resumes from history.
    assert addressed == [2, 2, 2]
    assert r.delivered["all"] == 5
    assert cut == ["slow"]
    assert slow_reasons == [("slow", "queue full")]
    assert slow.dead and slow not in r.connections
    assert fast in r.connections
    r.dispatch(Target.everyone(), Frame(b"later"))
    assert received(fast) == [b"later"]


def test_stalled_writes_are_found():
    r = Registry()
    a, b = make(r, "a"), make(r, "b")
    a.writing_since = 100.0
    b.writing_since = 108.0
    assert r.stalled(now=110.0, timeout=5.0) == [a]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def housekeep(r: Registry, clock: FakeClock, every: float = 15.0, write_timeout: float = 5.0) -> list[int]:
    return list(r.housekeep(Frame(b": beat\n\n"), every=every, write_timeout=write_timeout, clock=clock))


def test_each_connection_beats_on_its_own_schedule():
    r = Registry()
    early, late = make(r, "early"), make(r, "late")
    early.opened, late.opened = 100.0, 107.0
    clock = FakeClock(110.0)
    assert housekeep(r, clock) == [0]                     # neither has been open for a period yet
    clock.now = 115.5
    assert housekeep(r, clock) == [1]
    assert received(early) == [b": beat\n\n"] and received(late) == []
    clock.now = 122.5
    assert housekeep(r, clock) == [1]
    assert received(early) == [] and received(late) == [b": beat\n\n"]
    clock.now = 130.6                                     # the early one's next beat: a period after its last
    assert housekeep(r, clock) == [1]
    assert received(early) == [b": beat\n\n"] and received(late) == []


def test_housekeeping_goes_in_slices_and_skips_connections_gone_meanwhile():
    from pushsvc.registry import HOUSEKEEPING_SLICE

    r = Registry()
    conns = [make(r, f"c{i}") for i in range(HOUSEKEEPING_SLICE * 2 + 3)]
    for conn in conns:
        conn.opened = 0.0
    clock = FakeClock(20.0)
    pass_ = r.housekeep(Frame(b": beat\n\n"), every=15.0, write_timeout=5.0, clock=clock)
    assert next(pass_) == HOUSEKEEPING_SLICE
    for conn in conns:                                    # the client hangs up while the loop serves others
        r.remove(conn)
    assert list(pass_) == [0, 0]
    assert sum(len(received(conn)) for conn in conns) == HOUSEKEEPING_SLICE


def test_housekeeping_cuts_off_a_stalled_write_and_beats_nobody_stuck():
    r = Registry()
    cut = []
    stuck = make(r, "stuck", cut=lambda: cut.append("stuck"))
    idle = make(r, "idle")
    stuck.opened = idle.opened = 0.0
    stuck.writing_since = 10.0
    assert housekeep(r, FakeClock(16.0)) == [1]
    assert cut == ["stuck"] and stuck.dead and stuck not in r.connections
    assert received(stuck) == [] and received(idle) == [b": beat\n\n"]


def test_a_frame_queue_wakes_its_reader_and_refuses_past_its_size():
    import gevent
    from gevent.queue import Empty, Full

    from pushsvc.registry import FrameQueue

    queue = FrameQueue(2)
    with pytest.raises(Empty):
        queue.get_nowait()
    reader = gevent.spawn(queue.get)
    gevent.sleep(0)                                      # the reader waits
    queue.put_nowait(Frame(b"one"))
    assert reader.get(timeout=5).data == b"one"
    queue.put_nowait(Frame(b"a"))
    queue.put_nowait(Frame(b"b"))
    with pytest.raises(Full):
        queue.put_nowait(Frame(b"c"))
    assert [queue.get().data, queue.get_nowait().data, queue.qsize()] == [b"a", b"b", 0]


def test_a_frame_queue_left_by_a_timeout_still_delivers_the_next_frame():
    import gevent

    from pushsvc.registry import FrameQueue

    queue = FrameQueue(4)
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.01):
        queue.get()
    queue.put_nowait(Frame(b"later"))
    with gevent.Timeout(5):
        assert queue.get().data == b"later"
