"""A webhook receiver for the tests: a small HTTP server in a thread that checks every signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Answers 503 to the first ``fail_first`` POSTs (and to all while :attr:`down`), 204 to the rest."""

    def __init__(self, secret: str | None, *, fail_first: int = 0, hang_first: float = 0.0):
        self.secret = secret
        self.fail_first = fail_first
        # The first POST waits this long before it answers (a receiver that times out).
        self.hang_first = hang_first
        self.down = False
        self.tries = 0
        self.failed = 0
        self.bad_signatures = 0
        #: Every accepted event, with ``received`` (Unix ms) added.
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.take(body, self.headers.get("X-Pushsvc-Signature"),
                                       self.headers.get("Content-Type"))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/presence"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take(self, body: bytes, signature: str | None, content_type: str | None) -> int:
        with self.lock:
            self.tries += 1
            number = self.tries
        if number == 1 and self.hang_first:
            time.sleep(self.hang_first)
            return 504
        with self.lock:
            if self.secret is not None:
                expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
                if signature is None or not hmac.compare_digest(signature, expected):
                    self.bad_signatures += 1
                    return 401
            if self.down or number <= self.fail_first:
                self.failed += 1
                return 503
            assert content_type == "application/json"
            now = int(time.time() * 1000)
            self.events += [{**event, "received": now} for event in json.loads(body)["events"]]
            return 204

    def of(self, client: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["client"] == client]

    def types(self, client: str) -> list[str]:
        return [e["type"] for e in self.of(client)]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
