"""Memory per idle stream, and how a SIGTERM drain ends N open streams.

    python -m bench.ops_probe 2000

Starts gunicorn from ``gunicorn.conf.py`` (one worker, memory broker), opens N subscribes over raw
sockets, reads the worker's resident memory before and after, then sends SIGTERM to the arbiter and
times how every stream ends: the farewell comment, the jittered ``retry:``, the last empty chunk.
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import signal
import socket
import sys
import time

from tests.servers import Gunicorn

RETRY = re.compile(rb"retry: (\d+)")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


def subscribe(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /sse/subscribe/{client_id} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    return sock


def main(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    server = Gunicorn(env={"PUSHSVC_HEARTBEAT_SECONDS": "15"}).start()
    try:
        worker = server.worker_pids()[0]
        warm = subscribe(server.port, "warm-up")
        warm.recv(4096)
        warm.close()
        time.sleep(0.5)
        before = rss_kb(worker)
        started = time.monotonic()
        socks = [subscribe(server.port, f"probe-{i}") for i in range(count)]
        for sock in socks:
            sock.settimeout(10)
            sock.recv(4096)
        opened = time.monotonic() - started
        time.sleep(1)
        after = rss_kb(worker)
        print(f"{count} streams opened in {opened:.2f} s; worker RSS {before} kB -> {after} kB, "
              f"{(after - before) / count:.1f} kB per stream")

        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        bodies = {sock: b"" for sock in socks}
        selector = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        ended = 0
        while ended < count and time.monotonic() - started < 30:
            for key, _ in selector.select(1):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                bodies[key.fileobj] += data
                if not data or bodies[key.fileobj].endswith(b"\r\n0\r\n\r\n"):
                    selector.unregister(key.fileobj)
                    ended += 1
        drained = time.monotonic() - started
        server.proc.wait(30)
        exited = time.monotonic() - started
        clean = sum(body.endswith(b"\r\n0\r\n\r\n") and b": restarting" in body for body in bodies.values())
        retries = [int(RETRY.findall(body)[-1]) for body in bodies.values() if b": restarting" in body]
        print(f"SIGTERM: {ended}/{count} streams ended in {drained:.2f} s "
              f"({clean} cleanly with a retry hint), server exited after {exited:.2f} s; "
              f"{len(set(retries))} distinct retry values, "
              f"{min(retries, default=0)}-{max(retries, default=0)} ms")
        for sock in socks:
            sock.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
