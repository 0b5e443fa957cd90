"""gunicorn settings for pushsvc. Every value can be set from the environment; --bind and --workers on the
command line still win.

    gunicorn -c gunicorn.conf.py wsgi:app
"""

import os
import resource
import sys

from pushsvc.config import ConfigError, Settings

_env = os.environ.get

# Where to listen. Behind nginx keep it on loopback; in a container use 0.0.0.0:8000.
bind = _env("PUSHSVC_BIND", "127.0.0.1:8000")

# Event streams are long-lived and mostly idle: gevent holds thousands per worker in one process.
worker_class = "gevent"

# One worker is right with the in-memory broker (it cannot share events between processes); with
# PUSHSVC_BROKER_URL=redis://… use one per core.
workers = int(_env("PUSHSVC_WORKERS", "1"))

# Streams are capped at PUSHSVC_MAX_CONNECTIONS per worker; gunicorn must accept more than that, so a
# publish or a health check always finds room even when every stream slot is taken.
_max_streams = int(_env("PUSHSVC_MAX_CONNECTIONS", "10000") or 10000)
worker_connections = int(_env("PUSHSVC_WORKER_CONNECTIONS", str(_max_streams + 1000)))

# The worker heartbeat to the arbiter, not a request timeout: gevent workers stream for hours.
timeout = int(_env("PUSHSVC_WORKER_TIMEOUT", "30"))

# On SIGTERM or reload, open streams get a last retry hint and end; this is how long that may take.
graceful_timeout = int(_env("PUSHSVC_GRACEFUL_TIMEOUT", "10"))

# Keep-alive for ordinary requests (publish, health); a stream keeps its connection anyway.
keepalive = int(_env("PUSHSVC_KEEPALIVE", "5"))

# Workers are forked before the app is loaded, so Redis connections and greenlets start in the worker
# after gevent has patched the standard library.
preload_app = False

# gunicorn 27 opens a control socket at one fixed path per user; two servers on one machine would fight
# over it. Off unless a path is given.
control_socket_disable = not _env("PUSHSVC_CONTROL_SOCKET")
if _env("PUSHSVC_CONTROL_SOCKET"):
    control_socket = _env("PUSHSVC_CONTROL_SOCKET")

loglevel = _env("PUSHSVC_LOG_LEVEL", "info").lower()
accesslog = _env("PUSHSVC_ACCESS_LOG") or None


def _raise_file_limit(needed: int) -> None:
    # Each stream is a socket: the usual soft limit of 1024 descriptors would cap a worker far too low.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def on_starting(server):
    """Refuse a configuration that cannot work, with one line that says what to change."""
    try:
        settings = Settings.load()
    except ConfigError as error:
        sys.exit(f"pushsvc: {error}")
    cfg = server.cfg
    if settings.broker_scheme == "memory" and cfg.workers > 1:
        sys.exit(
            f"pushsvc: the in-memory broker cannot share events between {cfg.workers} workers; "
            "set PUSHSVC_BROKER_URL=redis://HOST:PORT/DB or run one worker (--workers 1)"
        )
    if settings.max_connections >= cfg.worker_connections:
        sys.exit(
            f"pushsvc: PUSHSVC_MAX_CONNECTIONS ({settings.max_connections}) must be below gunicorn's "
            f"worker_connections ({cfg.worker_connections}) so publish and health requests find room; "
            "raise PUSHSVC_WORKER_CONNECTIONS"
        )
    _raise_file_limit(cfg.worker_connections + 100)
