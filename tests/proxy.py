"""A small, unreliable HTTP proxy for tests: what a real proxy or load balancer does to event streams."""

from __future__ import annotations

import contextlib
import socket
import threading


class FlakyProxy:
    """A small HTTP proxy in front of a server, for what a real proxy or load balancer does to streams.

    Each request gets its own upstream connection (it forwards ``Connection: close``), so every request
    is seen here. ``fail(status, count)`` answers the next matching requests itself with that status;
    ``cut()`` drops every open connection, as a proxy restart would.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.seen: list[str] = []
        self.failed: list[str] = []
        self._failures: list[tuple[str, int]] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def fail(self, status: int, count: int = 1, match: str = "/subscribe/") -> None:
        with self._lock:
            self._failures.extend([(match, status)] * count)

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(downstream,), daemon=True).start()

    def _serve(self, downstream: socket.socket) -> None:
        downstream.settimeout(10)
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = downstream.recv(65536)
                if not chunk:
                    break
                head += chunk
        if b"\r\n\r\n" not in head:
            downstream.close()
            return
        head, _, rest = head.partition(b"\r\n\r\n")
        request_line, *headers = head.decode("latin-1").split("\r\n")
        status = self._take_failure(request_line)
        if status is not None:
            with contextlib.suppress(OSError):
                downstream.sendall(f"HTTP/1.1 {status} Proxy Says No\r\nContent-Length: 0\r\n"
                                   "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode())
            downstream.close()
            return
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
        forward = "\r\n".join([request_line, *kept, "Connection: close", "", ""]).encode("latin-1") + rest
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        except OSError:
            with contextlib.suppress(OSError):
                downstream.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n")
            downstream.close()
            return
        downstream.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self._open.update((downstream, upstream))
        upstream.sendall(forward)
        threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
        self._pump(upstream, downstream)

    def _take_failure(self, request_line: str) -> int | None:
        with self._lock:
            self.seen.append(request_line)
            for index, (match, status) in enumerate(self._failures):
                if match in request_line:
                    del self._failures[index]
                    self.failed.append(f"{status} {request_line}")
                    return status
        return None

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            # Either side ending ends the exchange: the upstream closes after each response.
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)
