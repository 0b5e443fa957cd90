"""One system call per small write: gevent's ``sendall`` without its per-call buffer-size query.

gevent's ``sendall`` asks the kernel for the socket's send buffer size (``getsockopt(SO_SNDBUF)``) on
every call, to cut very large writes into pieces (a workaround for PyPy's memoryview copies). An event
stream writes about a hundred bytes at a time, thousands of times a second, so that query is a second
system call per write: in a 5,000-stream broadcast it was a fifth of the worker's CPU (profile in
bench/RESULTS.md). The replacement tries one ordinary ``send`` and hands only a remainder, if any, to
gevent's own ``sendall``, so large and timed writes behave exactly as before.
"""

from __future__ import annotations

import logging
from typing import Any

from gevent import _socketcommon

log = logging.getLogger(__name__)

_gevent_sendall = getattr(_socketcommon, "_sendall", None)


def _sendall(sock: Any, data: memoryview, flags: int = 0, *args: Any, **kwargs: Any) -> Any:
    # Only sockets without a timeout (gunicorn's): a timed sendall needs gevent's deadline bookkeeping.
    if sock.timeout is None and len(data):
        # The socket's own send (an SSL socket encrypts), which waits for room when the buffer is full.
        sent = sock.send(data, flags)
        if sent == len(data):
            return None
        data = data[sent:]
    return _gevent_sendall(sock, data, flags, *args, **kwargs)


def install() -> bool:
    """Use the faster ``sendall`` for every gevent socket of this process; False if gevent has changed."""
    if _socketcommon.__dict__.get("_sendall") is _sendall:
        return True
    if _gevent_sendall is None or not hasattr(_socketcommon.SocketMixin, "sendall"):
        log.info("gevent has no _socketcommon._sendall: keeping its own sendall")
        return False
    _socketcommon._sendall = _sendall
    return True
