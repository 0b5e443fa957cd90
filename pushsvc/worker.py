"""The gunicorn worker: gevent's, plus a drain of every open stream before the worker stops.

gunicorn stops a worker with SIGTERM (graceful: a deploy, ``kill -HUP`` reloading workers, scaling down)
or SIGQUIT/SIGINT (quick). Its gevent worker then closes the listening socket and waits up to
``graceful_timeout`` for open requests to finish; an event stream never finishes by itself, so without
help every browser would be cut off at the deadline, all at once. Here each stream is first handed a last
comment and a ``retry:`` of its own, then ends; the browsers come back spread over several seconds, with
their ``Last-Event-ID``, to whichever worker or machine is up by then.

    gunicorn -k pushsvc.worker.DrainingWorker …   (gunicorn.conf.py sets it)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import FrameType
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker

from .service import Service

log = logging.getLogger(__name__)


class DrainingWorker(GeventWorker):
    """A gevent worker that drains pushsvc's streams on SIGTERM, SIGQUIT and SIGINT."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt a greenlet half-way through a loop over the registry; the drain
        # runs in a greenlet of its own, and only then does gunicorn's graceful stop begin.
        gevent.spawn(self._drain_then, super().handle_exit, sig, frame)

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        gevent.spawn(self._drain_then, super().handle_quit, sig, frame)

    def timeout_ctx(self) -> gevent.Timeout:
        # How long a kept-alive connection may wait for its next request. Once stopping, a connection
        # whose stream has just ended must not linger for the full keep-alive (the worker would wait for
        # it, and a client or proxy reusing it would reach a worker that only refuses): close it at once.
        return gevent.Timeout(self.cfg.keepalive if self.alive else 0.05, False)

    def _drain_then(self, stop: Callable[[int, FrameType | None], Any], sig: int,
                    frame: FrameType | None) -> None:
        for service in list(Service.started):
            try:
                service.drain()
            except Exception:  # a failed drain must never keep the worker from stopping
                log.exception("drain failed in worker %s", self.pid)
        stop(sig, frame)
