"""The registry in process: who gets a frame, and what happens to a connection that falls behind."""

from __future__ import annotations

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
