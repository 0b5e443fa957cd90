"""No token or ticket reaches a log line: gunicorn's access log (its request line holds the query string),
its error log, and pushsvc's own lines, at debug level."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from .helpers import wait_for
from .servers import Gunicorn
from .sse import RawStream

SECRET = "log-test-secret-0123456789-abcdefghijklmnopq"


# A deployer's own access line, with every atom that can carry a credential.
LEAKY_FORMAT = '%(h)s "%(r)s" %(s)s q=%(q)s ref="%(f)s" auth=%({authorization}i)s cookie=%({cookie}i)s'


@pytest.fixture(scope="module", params=["shipped format", "leaky format"])
def server(request) -> Iterator[Gunicorn]:
    env = {"PUSHSVC_JWT_SECRET": SECRET, "PUSHSVC_ACCESS_LOG": "-", "PUSHSVC_LOG_LEVEL": "DEBUG",
           "PUSHSVC_HEARTBEAT_SECONDS": "0.3"}
    args = ("--access-logformat", LEAKY_FORMAT) if request.param == "leaky format" else ()
    with Gunicorn(env=env, args=args) as gunicorn:
        gunicorn.leaky = bool(args)
        yield gunicorn


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")


def test_tokens_and_tickets_never_reach_the_logs(server):
    good = token("logged")
    secrets = [good, "SENTINEL-QUERY-TOKEN", "SENTINEL-ENCODED-NAME", "SENTINEL-REFERER", "SENTINEL-BAD-REQ",
               "SENTINEL-AUTH-HEADER"]
    s = RawStream(server.port, f"/sse/subscribe/logged?group=&token={good}")
    s.close()
    s = RawStream(server.port, f"/sse/subscribe/logged?token={good}&lastEventId=1-1")
    assert s.status == 200
    s.read_until(b"retry:")
    s.close()
    with httpx.Client(base_url=server.base, timeout=5) as http:
        assert http.get("/sse/subscribe/logged?token=SENTINEL-QUERY-TOKEN").status_code == 401
        assert http.get("/sse/subscribe/logged?%74oken=SENTINEL-ENCODED-NAME").status_code == 401
        assert http.get("/sse/clients", headers={"Referer": "https://x.example/?token=SENTINEL-REFERER",
                                                 "Authorization": "Bearer SENTINEL-AUTH-HEADER",
                                                 "Cookie": f"pushsvc_token={good}"}).status_code == 200
        ticket = http.post("/sse/tickets", headers={"Authorization": f"Bearer {good}"}).json()["ticket"]
        secrets.append(ticket)
        with http.stream("GET", f"/sse/subscribe/logged?ticket={ticket}") as stream:
            assert stream.status_code == 200
        assert http.get(f"/sse/subscribe/logged?ticket={ticket}").status_code == 401
    # A request gunicorn itself rejects: its error line names the request.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(b"GET /sse/subscribe/x?token=SENTINEL-BAD-REQ HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: nope\r\n\r\n")
        raw.recv(4096)

    assert wait_for(lambda: server.output().count("/sse/subscribe/logged") >= 6, 10), server.output()
    output = server.output()
    for secret in secrets:
        assert secret not in output
    if server.leaky:
        # The rest of the line is kept: what was asked, and its answer.
        assert '"GET /sse/subscribe/logged?token=[redacted] HTTP/1.1" 401' in output
        assert "ticket=[redacted]" in output and "auth=[redacted]" in output
    else:
        assert '"GET /sse/subscribe/logged HTTP/1.1" 401' in output
