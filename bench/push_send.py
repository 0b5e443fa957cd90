"""The publisher of the ``push-send`` scenario: a Flask app's own process calling ``Push.send`` over Redis.

Run only by ``bench/run.py``: it waits until the load generator has created ``--start-file`` (its
streams are open), then sends ``--count`` events, one ``Push.send`` each at ``--rate`` a second (or
``send_batch`` of ``--batch`` events), each carrying the load generator's marker with its publish time.
This is the path a legacy application takes: no HTTP, one Redis round trip per call.
"""

from __future__ import annotations

import argparse
import os
import time

from flask import Flask

from pushsvc import Push


def marker(seq: int) -> str:
    """64 bytes of event data: the load generator's ``@T<µs>;S<seq>;`` (CLOCK_MONOTONIC), then padding."""
    head = f"@T{time.monotonic_ns() // 1000:016d};S{seq:08d};"
    return head + "x" * (64 - len(head))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--start-file", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--targets", type=int, required=True, help="client ids c0 … c<targets-1>")
    parser.add_argument("--rate", type=float, default=1000, help="calls per second (open loop)")
    parser.add_argument("--batch", type=int, default=1, help="events per call (send_batch when > 1)")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the start file")
    args = parser.parse_args()

    push = Push(Flask("publisher"), broker_url=args.broker_url)
    deadline = time.monotonic() + args.wait
    while not os.path.exists(args.start_file):
        if time.monotonic() > deadline:
            raise SystemExit("the load generator never started its publish phase")
        time.sleep(0.01)
    started = time.monotonic()
    for call, first in enumerate(range(0, args.count, args.batch)):
        pause = started + call / args.rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        seqs = range(first, min(first + args.batch, args.count))
        if args.batch == 1:
            push.send(f"c{first % args.targets}", marker(first))
        else:
            push.send_batch([{"to": f"c{s % args.targets}", "data": marker(s)} for s in seqs])


if __name__ == "__main__":
    main()
