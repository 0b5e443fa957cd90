"""In-process micro-benchmark of the fan-out hot path, without sockets: Registry.dispatch to N waiting
connections, then the wake-up of each connection's greenlet (what ``Service._live`` pays per event).

    python bench/micro_dispatch.py [--streams 5000] [--events 200]
    python bench/micro_dispatch.py --prefix

Prints CPU microseconds per delivery for the dispatch loop and for wake + get. Used to decide hot-path
changes in registry.py whose effect is too small to see through the noise of the end-to-end benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gevent

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pushsvc.model import Frame, Target
from pushsvc.registry import Connection, Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--prefix", action="store_true", help="measure the prefix index instead")
    args = parser.parse_args()
    if args.prefix:
        prefix_lookup()
        return
    registry = Registry()
    received = [0]

    def reader(conn: Connection) -> None:
        get = conn.queue.get
        while True:
            get()
            received[0] += 1

    conns = [Connection(f"c{i}", queue_size=1000) for i in range(args.streams)]
    for conn in conns:
        registry.add(conn)
    readers = [gevent.spawn(reader, conn) for conn in conns]
    gevent.sleep(0.1)
    target, frame = Target.everyone(), Frame(b"x" * 64)
    dispatch, wake = [], []
    for _ in range(args.events):
        t0 = time.process_time()
        registry.dispatch(target, frame)
        t1 = time.process_time()
        want = received[0] + args.streams
        while received[0] < want:
            gevent.sleep(0)
        t2 = time.process_time()
        dispatch.append((t1 - t0) / args.streams * 1e6)
        wake.append((t2 - t1) / args.streams * 1e6)
    gevent.killall(readers)
    print(f"dispatch {statistics.median(dispatch):.3f} us/delivery, wake+get {statistics.median(wake):.3f} "
          f"us/delivery (median of {args.events} events to {args.streams} streams)")


def prefix_lookup(streams: int = 10_000, rounds: int = 200) -> None:
    """A prefix target through the sorted-id index, against scanning every connection with ``matches``."""
    registry = Registry()
    for i in range(streams):
        registry.add(Connection(f"shop{i % 100}-user{i}", queue_size=10))
    target = Target.prefix("shop7-")
    t0 = time.process_time()
    for _ in range(rounds):
        indexed = sum(1 for _ in registry.select(target))
    t1 = time.process_time()
    for _ in range(rounds):
        scanned = sum(1 for c in registry.connections if target.matches(c.client_id, c.groups))
    t2 = time.process_time()
    assert indexed == scanned
    print(f"prefix target ({indexed} of {streams} connections): index {(t1 - t0) / rounds * 1e6:.0f} us, "
          f"scan {(t2 - t1) / rounds * 1e6:.0f} us per publish")


if __name__ == "__main__":
    main()
