"""gunicorn settings for pushsvc. Every value can be set from the environment; --bind and --workers on the
command line still win.

    gunicorn -c python:pushsvc.server.gunicorn_conf pushsvc.wsgi:app   # from an installed package
    gunicorn -c gunicorn.conf.py wsgi:app                               # in a checkout: the same settings
"""

import atexit
import glob
import os
import resource
import shutil
import sys
import tempfile

_env = os.environ.get

# Metrics from several workers: prometheus_client keeps each worker's values in files in this directory
# and adds them up at scrape time. It picks that mode when it is imported, so the variable must be set
# before pushsvc (which imports it) is. Unless the operator chose a directory, each arbiter makes a fresh
# one (no count from an earlier run leaks in) and removes it when it exits. A reload (HUP) re-reads this
# file in the same arbiter and keeps it; a new arbiter (USR2 upgrade) inherits the variable and the
# owner's pid, sees that it is not the owner, and makes its own.
_METRICS_OWNER = "_PUSHSVC_METRICS_DIR_OWNER"


def _own_metrics_dir():
    path = tempfile.mkdtemp(prefix="pushsvc-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ[_METRICS_OWNER] = str(os.getpid())
    owner = os.getpid()
    # Workers are forked and inherit this exit hook: only the arbiter that made the directory removes it.
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, ignore_errors=True))


if not _env("PROMETHEUS_MULTIPROC_DIR") or _env(_METRICS_OWNER, str(os.getpid())) != str(os.getpid()):
    _own_metrics_dir()

from pushsvc.config import (  # noqa: E402
    DEFAULT_MAX_CONNECTIONS,
    MAX_REQUEST_LINE_BYTES,
    MEMORY_SCHEMES,
    ConfigError,
    Settings,
    check_environment,
)
from pushsvc.limits import (  # noqa: E402
    FD_RESERVE,
    LIMIT_REPORTED,
    connection_cap,
    file_limit,
    stream_cap,
)
from pushsvc.metrics import worker_exited  # noqa: E402
from pushsvc.server.logging import RedactingLogger  # noqa: E402

# What `from pushsvc.server.gunicorn_conf import *` (the checkout's gunicorn.conf.py) hands gunicorn.
__all__ = [
    "access_log_format", "accesslog", "backlog", "bind", "child_exit", "control_socket_disable",
    "graceful_timeout", "keepalive", "limit_request_line", "logger_class", "loglevel", "on_starting",
    "post_worker_init", "preload_app", "timeout", "worker_class", "worker_connections", "workers",
]

# Where to listen. Behind nginx keep it on loopback; in a container use 0.0.0.0:8000.
bind = _env("PUSHSVC_BIND", "127.0.0.1:8000")

# Event streams are long-lived and mostly idle: gevent holds thousands per worker in one process. This is
# gunicorn's gevent worker plus one step: on SIGTERM (deploy, reload) and SIGQUIT it first ends every
# open stream with a jittered retry: hint, so browsers come back spread out instead of all at once.
worker_class = "pushsvc.server.worker.DrainingWorker"

# One worker is right with the in-memory broker (it cannot share events between processes); with
# PUSHSVC_BROKER_URL=redis://… use one per core.
workers = int(_env("PUSHSVC_WORKERS", "1"))

# Streams are capped at PUSHSVC_MAX_CONNECTIONS per worker; gunicorn must accept more than that, so a
# publish or a health check always finds room even when every stream slot is taken.
_max_streams = int(_env("PUSHSVC_MAX_CONNECTIONS") or DEFAULT_MAX_CONNECTIONS)
worker_connections = int(_env("PUSHSVC_WORKER_CONNECTIONS", str(_max_streams + 1000)))

# Connections the kernel holds until the worker accepts them. A restart or a network blip brings every
# browser back within seconds; past this queue the kernel drops their SYNs, and each dropped one waits a
# whole second to retry (gunicorn's default of 2048 did that to 5,000 streams reconnecting at once). Linux
# caps it at net.core.somaxconn.
backlog = int(_env("PUSHSVC_BACKLOG", "8192"))

# The worker's heartbeat to the arbiter, not a request timeout: with gevent a stream may stay open for
# days, and only a worker whose event loop is stuck this long is killed and replaced.
timeout = int(_env("PUSHSVC_WORKER_TIMEOUT", "30"))

# On SIGTERM or reload each stream is handed its last retry hint and ends within milliseconds; this is
# the time left for publishes in flight and for clients slow to read that last chunk. After it, gunicorn
# cuts what is left. Keep it below your orchestrator's kill timeout (Kubernetes: 30 s).
graceful_timeout = int(_env("PUSHSVC_GRACEFUL_TIMEOUT", "10"))

# Keep-alive for ordinary requests (publish, health, metrics); a stream holds its connection anyway.
# Behind nginx with upstream keepalive, keep nginx's upstream keepalive_timeout below this, or nginx may
# reuse a connection gunicorn has just closed and answer 502 (deploy/nginx.conf uses 4 s).
keepalive = int(_env("PUSHSVC_KEEPALIVE", "5"))

# Workers are forked before the app is loaded, so Redis connections and greenlets start in the worker
# after gevent has patched the standard library.
preload_app = False

# gunicorn 27 opens a control socket at one fixed path per user; two servers on one machine would fight
# over it. Off unless a path is given.
control_socket_disable = not _env("PUSHSVC_CONTROL_SOCKET")
if _env("PUSHSVC_CONTROL_SOCKET"):
    control_socket = _env("PUSHSVC_CONTROL_SOCKET")
    __all__.append("control_socket")

loglevel = _env("PUSHSVC_LOG_LEVEL", "info").lower()
accesslog = _env("PUSHSVC_ACCESS_LOG") or None
# gunicorn's default access line holds the whole request line; pushsvc's query strings may carry a
# subscriber token or ticket, so log the path without them (%(U)s), never %(r)s or %(q)s.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'

# The longest request line gunicorn accepts (its maximum): a subscribe joining many groups has a long query.
limit_request_line = MAX_REQUEST_LINE_BYTES


logger_class = RedactingLogger


def _raise_file_limit(needed: int) -> None:
    # Each stream is a socket: the usual soft limit of 1024 descriptors would cap a worker far too low.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def on_starting(server):
    """Refuse a configuration that cannot work, with one line that says what to change."""
    # Said here, once for the whole server: the workers it forks inherit that it was checked.
    for line in check_environment(always=True):
        server.log.warning("pushsvc: %s", line)
    try:
        settings = Settings.load()
    except ConfigError as error:
        sys.exit(f"pushsvc: {error}")
    if settings.broker_scheme not in MEMORY_SCHEMES:
        _check_redis()
    cfg = server.cfg
    if settings.broker_scheme in MEMORY_SCHEMES and cfg.workers > 1:
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
    _raise_file_limit(cfg.worker_connections + FD_RESERVE)
    _fit_file_limit(server, settings)
    _warn_http2(server)
    _wipe_metrics_dir()


def _warn_http2(server):
    # gunicorn 27's own HTTP/2 (http_protocols with h2) serves the requests of one connection one
    # after another on the gevent worker (AsyncWorker.handle_http2): a stream never ends, so every other
    # request of that browser's connection would wait behind it. HTTP/2 belongs in the proxy in front.
    if "h2" in (server.cfg.http_protocols or []):
        server.log.warning(
            "pushsvc: gunicorn's HTTP/2 (http_protocols=%s) serves one connection's requests one at a "
            "time, so an event stream stalls every other request of its page; drop h2 and end HTTP/2 "
            "at nginx (deploy/nginx-http2.conf)", ",".join(server.cfg.http_protocols))


def _fit_file_limit(server, settings):
    # Past the file limit accept() fails with EMFILE and publish and health wait unanswered: accept no
    # more sockets than there are descriptors, and say once when the limit lowers what was asked for.
    limit = file_limit()
    connections = connection_cap(server.cfg.worker_connections, limit)
    if connections < server.cfg.worker_connections:
        server.cfg.set("worker_connections", connections)
    streams = stream_cap(settings.max_connections, limit)
    if streams < settings.max_connections:
        server.log.warning(
            "pushsvc: the file limit (%s descriptors, ulimit -n) caps each worker at %d streams and %d "
            "connections instead of PUSHSVC_MAX_CONNECTIONS=%d; raise the limit to hold more",
            limit, streams, connections, settings.max_connections)
        os.environ[LIMIT_REPORTED] = "1"


def post_worker_init(worker):
    """Tune the worker for thousands of streams (see pushsvc/server/runtime.py): one system call per small
    write, and no long garbage collections. Process-wide, so it is done here, for the standalone
    service; an application that mounts pushsvc in its own server opts in with
    pushsvc.server.runtime.tune()."""
    from pushsvc.server import runtime

    runtime.tune()


def child_exit(server, worker):
    """A worker is gone: its open-connections gauge must stop counting."""
    worker_exited(worker.pid)


def _wipe_metrics_dir():
    # prometheus_client asks for an empty directory at start: old files would add an earlier run's counts.
    # The arbiter's own (all zero) files are kept: it has imported pushsvc and made them already.
    own = str(os.getpid())
    for name in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        if not name.endswith(f"_{own}.db"):
            os.unlink(name)


def _check_redis():
    """A wrong Redis host, port or password stops start-up here, in one line, not in every worker.

    The check runs in a child process: importing redis here, before the workers fork and gevent patches
    the standard library, would leave them with unpatched modules.
    """
    import subprocess

    probe = "from pushsvc.brokers.redis.check import main; main()"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        sys.exit(lines[-1] if lines else "pushsvc: PUSHSVC_BROKER_URL cannot be reached")
