"""Test-side SSE tools: a parser written from the HTML standard, and two real clients.

* :func:`parse` follows the standard's "interpreting an event stream" steps, so tests check what a
  browser would see, not what our encoder meant.
* :class:`RawStream` speaks HTTP/1.1 over a plain socket: bytes on the wire, or a client that stops reading.
* :class:`Listener` uses httpx streaming with httpx-sse in a thread, like an application's client would.
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from httpx_sse import connect_sse


@dataclass
class Parsed:
    """One dispatched event, as an EventSource would report it."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


@dataclass
class ParseState:
    last_event_id: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


_LINES = re.compile(r"\r\n|\r|\n")


def parse(text: str, state: ParseState | None = None) -> list[Parsed]:
    """Interpret a complete event stream (text already decoded as UTF-8) as a browser would.

    An incomplete event at the end (no blank line after it) is discarded, as the standard says.
    """
    state = state or ParseState()
    if text.startswith("\ufeff"):
        text = text[1:]
    events: list[Parsed] = []
    data: list[str] = []
    event_type = ""
    lines = _LINES.split(text)
    # The last element is what follows the final line break: an unterminated line, never processed.
    for line in lines[:-1]:
        if line == "":
            if data:
                events.append(Parsed("\n".join(data), event_type or "message", state.last_event_id,
                                     state.retry))
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            state.comments.append(line[1:])
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            if "\x00" not in value:
                state.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            state.retry = int(value)
    return events


class RawStream:
    """A GET over a raw socket that keeps the response body as bytes (chunked encoding removed)."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None, *,
                 host: str = "127.0.0.1", timeout: float = 5.0, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        self.sock.sendall(request.encode("utf-8"))
        self._raw = b""
        self.body = b""
        self.closed = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self._read_head(timeout)

    def _read_head(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._raw and time.monotonic() < end:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self._raw += chunk
        head, _, self._raw = self._raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._decode()

    def _decode(self) -> None:
        if not self._chunked:
            self.body += self._raw
            self._raw = b""
            return
        while True:
            size_line, sep, rest = self._raw.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self.closed = True
                self._raw = b""
                return
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self._raw = rest[size + 2:]

    def read_until(self, needle: bytes, seconds: float = 5.0, *, count: int = 1) -> bool:
        """Read until the body holds ``needle`` (``count`` times), the stream ends, or ``seconds`` pass."""
        def found() -> bool:
            return needle in self.body if count == 1 else self.body.count(needle) >= count
        end = time.monotonic() + seconds
        while not found() and not self.closed and time.monotonic() < end:
            if not self._recv(end):
                break
        return found()

    def read_answer(self, seconds: float = 5.0) -> bytes:
        """Read a plain (not streamed) answer to its end: Content-Length bytes, or until the server closes."""
        size = int(self.headers.get("content-length", -1))
        end = time.monotonic() + seconds
        while (size < 0 or len(self.body) < size) and not self.closed and time.monotonic() < end:
            if not self._recv(end):
                break
        return self.body

    def read_for(self, seconds: float) -> bytes:
        """Read whatever arrives within ``seconds``, to keep the socket's buffers drained.

        Never proof that nothing came: for that, see :func:`tests.helpers.assert_next_is_marker`.
        """
        end = time.monotonic() + seconds
        while not self.closed and time.monotonic() < end:
            if not self._recv(end):
                break
        return self.body

    def wait_closed(self, seconds: float = 5.0) -> bool:
        end = time.monotonic() + seconds
        while not self.closed and time.monotonic() < end:
            if not self._recv(end):
                break
        return self.closed

    def _recv(self, end: float) -> bool:
        self.sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        except OSError:
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self._raw += chunk
        self._decode()
        return True

    def events(self) -> list[Parsed]:
        return parse(self.body.decode("utf-8"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Listener:
    """An httpx + httpx-sse client reading in a thread; events land in :attr:`events`."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str] | None = None):
        self.events: queue.Queue = queue.Queue()
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.done = threading.Event()
        self._opened = threading.Event()
        self._socket: socket.socket | None = None
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(5.0, read=None))
        self._thread = threading.Thread(target=self._run, args=(path, headers or {}), daemon=True)
        self._thread.start()
        if not self._opened.wait(5):
            raise TimeoutError(f"no response to {path} within 5 s")

    def _run(self, path: str, headers: dict[str, str]) -> None:
        try:
            with connect_sse(self._client, "GET", path, headers=headers) as source:
                self.status = source.response.status_code
                self.response_headers = dict(source.response.headers)
                stream = source.response.extensions.get("network_stream")
                self._socket = stream.get_extra_info("socket") if stream is not None else None
                self._opened.set()
                for sse in source.iter_sse():
                    # httpx-sse also yields a "message" for a blank line that follows only a retry or a
                    # comment, where a browser dispatches nothing; drop those (use RawStream for "").
                    if sse.data == "" and sse.event == "message":
                        continue
                    self.events.put(sse)
        except (httpx.HTTPError, OSError):
            pass
        finally:
            self._opened.set()
            self.done.set()

    def get(self, timeout: float = 5.0):
        return self.events.get(timeout=timeout)

    def take(self, n: int, timeout: float = 5.0) -> list:
        end = time.monotonic() + timeout
        return [self.events.get(timeout=max(0.01, end - time.monotonic())) for _ in range(n)]

    def close(self) -> None:
        # Shut the socket down so the reading thread wakes now, not at the next heartbeat.
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(timeout=5)


def iter_lines(body: bytes) -> Iterator[str]:
    yield from body.decode("utf-8").split("\n")
