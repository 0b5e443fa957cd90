"""How many streams a worker can hold: its setting, bounded by the process's real file limit.

Every stream is a socket, and so is every publish and health check. A worker whose descriptors run out
cannot ``accept()`` at all (``EMFILE``): publish and health would sit in the kernel's backlog behind the
streams. So the limit leaves a reserve for what is not a client (the listening socket, Redis, logs, the
metrics files) and, within the client sockets, room for publish and health beyond the last stream.
Standard library only.
"""

from __future__ import annotations

import resource

# Descriptors that are not client sockets: standard streams, the listening socket, epoll, signal pipes,
# the Redis pool (16) and reader, the metrics files, log files, with room to spare.
FD_RESERVE = 64
# Client sockets left for publish, health and soft refusals once the streams have taken theirs.
HANDLER_HEADROOM = 32
# Set by the gunicorn arbiter once it has said that the limit lowers the cap, so its workers (which
# inherit it) do not say it again, each.
LIMIT_REPORTED = "_PUSHSVC_FILE_LIMIT_REPORTED"


def file_limit() -> int | None:
    """The soft ``RLIMIT_NOFILE`` of this process, or ``None`` when it is unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(worker_connections: int, limit: int | None) -> int:
    """gunicorn's ``worker_connections``, lowered so that every accepted socket has a descriptor."""
    if limit is None:
        return worker_connections
    return max(1, min(worker_connections, limit - FD_RESERVE))


def stream_cap(max_connections: int, limit: int | None) -> int:
    """Open streams one worker admits: ``PUSHSVC_MAX_CONNECTIONS``, or fewer when the file limit says so."""
    if limit is None:
        return max_connections
    return max(1, min(max_connections, limit - FD_RESERVE - HANDLER_HEADROOM))
