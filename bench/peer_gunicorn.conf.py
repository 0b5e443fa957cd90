"""gunicorn settings for the flask-sse peer: one gevent worker, room for 10,000+ streams."""

import resource

worker_class = "gevent"
workers = 1
# Each stream holds a socket and its own Redis connection; give the worker every descriptor allowed.
worker_connections = 20000
timeout = 30
# flask-sse streams never notice a client that left, so a graceful stop would wait for them in vain.
graceful_timeout = 3
keepalive = 5
loglevel = "warning"


def on_starting(server):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
