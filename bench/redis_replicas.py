"""What ``PUSHSVC_REDIS_MIN_REPLICAS`` costs a publisher: the Redis broker's publish with and without a
``WAIT`` for one replica, against a private master and its replica on this machine.

    python bench/redis_replicas.py [--events 3000] [--batch 100]

Each publish is one ``RedisBroker.publish`` from this process (no HTTP, no streams open): a single event,
then batches. Figures are wall-clock microseconds per publish call as the publisher waits, and the
master's CPU (from ``/proc``) per event.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pushsvc.brokers.redis import RedisBroker
from pushsvc.model import Message, Target
from pushsvc.wire import encode_body

BODY = encode_body("x" * 64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, directory: str, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", directory, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, pid: int, *, min_replicas: int, events: int, batch: int) -> dict[str, float]:
    broker = RedisBroker(url, history_size=10_000, history_ttl_seconds=600, min_replicas=min_replicas)
    one = [Message(Target.clients(["bench"]), BODY)]
    many = one * batch
    broker.publish(one)  # scripts loaded, clock measured
    figures = {}
    for name, messages, calls in (("single", one, events), (f"batch of {batch}", many, events // batch)):
        cpu, began = cpu_seconds(pid), time.perf_counter()
        for _ in range(calls):
            broker.publish(messages)
        wall, cpu = time.perf_counter() - began, cpu_seconds(pid) - cpu
        figures[f"{name}: µs per call"] = wall / calls * 1e6
        figures[f"{name}: master CPU µs per event"] = cpu / (calls * len(messages)) * 1e6
    broker.redis.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed")
    directory = tempfile.mkdtemp(prefix="pushsvc-bench-")
    master_port, replica_port = free_port(), free_port()
    procs = [start_redis(master_port, directory)]
    try:
        procs.append(start_redis(replica_port, directory, "--dbfilename", "replica.rdb",
                                 "--replicaof", "127.0.0.1", str(master_port)))
        master = redis.Redis(port=master_port)
        while not any(isinstance(v, dict) and v.get("state") == "online"
                      for v in master.info("replication").values()):
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{master_port}/0"
        for min_replicas in (0, 1):
            figures = measure(url, procs[0].pid, min_replicas=min_replicas, events=args.events,
                              batch=args.batch)
            print(f"PUSHSVC_REDIS_MIN_REPLICAS={min_replicas}")
            for name, value in figures.items():
                print(f"  {name:40} {value:8.1f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
