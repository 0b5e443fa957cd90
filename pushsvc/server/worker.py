"""The gunicorn worker: gevent's, plus a drain of every open stream before the worker stops.

gunicorn stops a worker with SIGTERM (graceful: a deploy, ``kill -HUP`` reloading workers, scaling down)
or SIGQUIT/SIGINT (quick). Its gevent worker then closes the listening socket and waits up to
``graceful_timeout`` for open requests to finish; an event stream never finishes by itself, so without
help every browser would be cut off at the deadline, all at once. Here each stream is first handed a last
comment and a ``retry:`` of its own, then ends; the browsers come back spread over several seconds, with
their ``Last-Event-ID``, to whichever worker or machine is up by then.

    gunicorn -k pushsvc.worker.DrainingWorker …   (pushsvc.server.gunicorn_conf sets it)

It also answers HTTP/1 with :class:`CoalescingResponse`: the status line and headers leave in the same
system call as the first piece of the body.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable
from types import FrameType
from typing import Any

import gevent
from gevent import monkey
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

log = logging.getLogger(__name__)


class CoalescingResponse(wsgi.Response):
    """gunicorn's HTTP/1 response, but the head goes out with the first body write, in one ``send``.

    gunicorn writes the status line and headers, then each piece of the body, each with its own system
    call. On a server whose every request is small (a publish and its JSON answer; a subscribe and its
    first ``retry:`` chunk) that is two sends, two packets and two wake-ups of the client for one answer.
    Only the first write changes; ``close()`` with no body and ``sendfile`` send the head alone, as before.
    """

    _holding = False
    _head: bytes | None = None

    def write(self, arg: bytes) -> None:
        if self.headers_sent:
            return super().write(arg)
        self._holding = True
        try:
            super().write(arg)  # send_headers() keeps the head; _emit_body() sends it with the body
        finally:
            self._holding = False
            head, self._head = self._head, None
            if head is not None:  # no body was written (HEAD, a 304, an empty chunk)
                self.sock.sendall(head)

    def send_headers(self) -> None:
        if not self._holding or self.headers_sent:
            return super().send_headers()
        sock, self.sock = self.sock, _Capture()
        try:
            super().send_headers()
            self._head = self.sock.data
        finally:
            self.sock = sock

    def _emit_body(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is None:
            return super()._emit_body(data)
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(head + data)


class _Capture:
    """Stands in for the socket while gunicorn formats the head."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


def use_coalescing_response() -> bool:
    """Make gunicorn answer HTTP/1 with :class:`CoalescingResponse` in this process."""
    if wsgi.Response is CoalescingResponse:
        return True
    if CoalescingResponse.__mro__[1] is not wsgi.Response or not hasattr(wsgi.Response, "_emit_body"):
        log.info("gunicorn's Response is not the one pushsvc knows: keeping it as it is")
        return False
    wsgi.Response = CoalescingResponse
    return True


def native_logging_lock() -> None:
    """Give the logging module back a lock of the standard library, for the interpreter's last steps.

    gevent's patch makes ``logging``'s module lock a pure-Python RLock that asks gevent which greenlet
    runs. At exit, module globals are cleared in reverse import order, so gevent's (imported in the worker)
    go before those of modules imported earlier in the arbiter, such as ``flask.logging``. Clearing that
    module frees its ``default_handler``, a handler no logger holds, and logging's clean-up of it takes the
    module lock, whose gevent half is gone by then: ``Exception ignored in: _removeHandlerRef …
    TypeError: 'NoneType' object is not callable`` at every stop. Called once no greenlet runs any more,
    a native lock is as safe, and it needs nothing that is cleared before logging itself.
    """
    logging._lock = monkey.get_original("_thread", "RLock")()  # type: ignore[attr-defined]


class DrainingWorker(GeventWorker):
    """A gevent worker that drains pushsvc's streams on SIGTERM, SIGQUIT and SIGINT."""

    _quitting = False

    def init_process(self) -> None:
        use_coalescing_response()
        super().init_process()

    def patch(self) -> None:
        super().patch()
        # Registered after patching, so it runs first at exit, after the last greenlet's turn.
        atexit.register(native_logging_lock)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt a greenlet half-way through a loop over the registry; the drain
        # runs in a greenlet of its own, and only then does gunicorn's graceful stop begin.
        gevent.spawn(self._drain_then, super().handle_exit, sig, frame)

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        # Ctrl-C reaches the worker twice (SIGINT to the terminal's process group, then the arbiter's
        # SIGQUIT): a second quick stop would call sys.exit() in a greenlet during the interpreter's exit.
        if self._quitting:
            return
        self._quitting = True
        gevent.spawn(self._drain_then, super().handle_quit, sig, frame)

    def timeout_ctx(self) -> gevent.Timeout:
        # How long a kept-alive connection may wait for its next request. Once stopping, a connection
        # whose stream has just ended must not linger for the full keep-alive (the worker would wait for
        # it, and a client or proxy reusing it would reach a worker that only refuses): close it at once.
        return gevent.Timeout(self.cfg.keepalive if self.alive else 0.05, False)

    def _drain_then(self, stop: Callable[[int, FrameType | None], Any], sig: int,
                    frame: FrameType | None) -> None:
        # Imported here: gunicorn's arbiter imports this worker class before any worker patches the
        # standard library, and the service brings PyJWT, which imports ssl.
        from ..service import Service

        for service in list(Service.started):
            try:
                service.drain()
            except Exception:  # a failed drain must never keep the worker from stopping
                log.exception("drain failed in worker %s", self.pid)
        stop(sig, frame)
