"""gunicorn configured for HTTP/2 itself gets a warning at start-up: its HTTP/2 serves one connection's
requests one after another on the gevent worker, so an event stream would stall the rest of its page.

gunicorn refuses ``h2`` by itself while the h2 package is missing (as here), so the check is run on the
arbiter's own ``on_starting`` with gunicorn's real settings, in a process of its own (importing the
config module sets up the metrics directory of a server).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .servers import ROOT, Gunicorn

CHECK = """
import logging, sys
from gunicorn.config import Config
from pushsvc.server.gunicorn_conf import _warn_http2

class Server:
    cfg = Config()
    log = logging.getLogger("check")

logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")
if sys.argv[1]:
    Server.cfg.set("http_protocols", sys.argv[1])
_warn_http2(Server)
"""


def warnings_for(protocols: str) -> list[str]:
    env = Gunicorn().env
    done = subprocess.run([sys.executable, "-c", CHECK, protocols], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("WARNING pushsvc:")]


@pytest.mark.parametrize("protocols", ["h2,h1", "h1,h2", "h2"])
def test_gunicorn_with_h2_is_warned_that_streams_stall_on_it(protocols):
    [line] = warnings_for(protocols)
    assert f"http_protocols={protocols}" in line
    assert "stalls every other request" in line and "deploy/nginx-http2.conf" in line


@pytest.mark.parametrize("protocols", ["", "h1"])
def test_http_1_1_is_not_warned(protocols):
    assert warnings_for(protocols) == []


def test_on_starting_runs_the_check():
    source = (ROOT / "pushsvc" / "server" / "gunicorn_conf.py").read_text()
    body = source.split("def on_starting(server):", 1)[1].split("\ndef ", 1)[0]
    assert "_warn_http2(server)" in body
