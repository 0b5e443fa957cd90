"""The worker process tuned for thousands of streams: one system call per small write, rare full GCs.

**sendall.** gevent's ``sendall`` asks the kernel for the socket's send buffer size
(``getsockopt(SO_SNDBUF)``) on every call, to cut very large writes into pieces (a workaround for PyPy's
memoryview copies). An event stream writes about a hundred bytes at a time, thousands of times a second,
so that query is a second system call per write (22 % of the profile samples of a 5,000-stream
broadcast; 3.2 instead of 1.75 µs of CPU per small write). The replacement tries one ordinary ``send`` and
hands only a remainder, if any, to gevent's own ``sendall``, so large and timed writes behave as before.

**Garbage collection.** With the default thresholds a worker holding 5,000 streams runs full collections
under load, each one a 200-400 ms pause of every stream (measured with gc callbacks; bench/RESULTS.md).
Objects alive at start-up are frozen out of collections, and the young-generation threshold is raised so
cyclic garbage is still collected young, in small batches, while full collections (which Python also holds
back until a quarter of the long-lived objects are new) become rare.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from gevent import _socketcommon

log = logging.getLogger(__name__)

_gevent_sendall = getattr(_socketcommon, "_sendall", None)
# Young collections every 50,000 net new objects (default 700); a full one only after 10 middle ones.
GC_THRESHOLDS = (50_000, 20, 10)
_tuned_in: int | None = None


def tune() -> None:
    """Tune this process once (a forked worker tunes itself again)."""
    global _tuned_in
    if _tuned_in == os.getpid():
        return
    _tuned_in = os.getpid()
    install_sendall()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _sendall(sock: Any, data: memoryview, flags: int = 0, *args: Any, **kwargs: Any) -> Any:
    # Only sockets without a timeout (gunicorn's): a timed sendall needs gevent's deadline bookkeeping.
    if sock.timeout is None and len(data):
        # The socket's own send (an SSL socket encrypts), which waits for room when the buffer is full.
        sent = sock.send(data, flags)
        if sent == len(data):
            return None
        data = data[sent:]
    return _gevent_sendall(sock, data, flags, *args, **kwargs)


def install_sendall() -> bool:
    """Use the faster ``sendall`` for every gevent socket of this process; False if gevent has changed."""
    if _socketcommon.__dict__.get("_sendall") is _sendall:
        return True
    if _gevent_sendall is None or not hasattr(_socketcommon.SocketMixin, "sendall"):
        log.info("gevent has no _socketcommon._sendall: keeping its own sendall")
        return False
    _socketcommon._sendall = _sendall
    return True
