"""The client's end of a stream, as the server sees its socket: cut it off, or hear it hang up.

gunicorn's gevent sockets have no timeout, and a peer that went away is normally seen only on the next
write: a stream idle between heartbeats would keep its place (and its presence entry) for up to a
heartbeat period. A read watcher on the socket hears the FIN at once, as Go's HTTP server does with its
background read.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

import gevent

log = logging.getLogger(__name__)


class SocketPeer:
    """Wraps the socket gunicorn hands the application (``environ["gunicorn.socket"]``)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def cut(self) -> None:
        """Shut the socket down: a write blocked on a peer that stopped reading fails at once."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def watch(self, on_hangup: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_hangup`` once when the peer closes its end; returns a function that stops watching."""
        try:
            fileno = self._sock.fileno()
        except OSError:
            return lambda: None
        watcher = gevent.get_hub().loop.io(fileno, 1)

        def readable() -> None:
            try:
                data = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            # Bytes from a client mid-stream are not ours to read; only the end of the stream matters.
            watcher.stop()
            if not data:
                on_hangup()

        watcher.start(readable)
        return watcher.stop
