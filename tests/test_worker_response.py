"""pushsvc.worker.CoalescingResponse: the same bytes as gunicorn's own response, in fewer sends.

Requests are parsed by gunicorn's own parser; the socket is a recorder of ``sendall`` calls.
"""

from __future__ import annotations

import re

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from pushsvc.worker import CoalescingResponse, use_coalescing_response

PUBLISH = (b"POST /sse/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 2\r\n\r\n{}")
SUBSCRIBE = b"GET /sse/subscribe/u1 HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD = b"HEAD /sse/clients HTTP/1.1\r\nHost: x\r\n\r\n"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.calls.append(bytes(data))


def answer(response_class: type, raw: bytes, status: str, headers: list[tuple[str, str]],
           body: list[bytes]) -> list[bytes]:
    """What goes to the socket, send by send, when gunicorn writes this answer."""
    cfg = Config()
    request = next(RequestParser(cfg, [raw], ("127.0.0.1", 5000)))
    sock = Recorder()
    response = response_class(request, sock, cfg)
    response.start_response(status, headers)
    for piece in body:
        response.write(piece)
    response.close()
    return [re.sub(rb"Date: [^\r]*", b"Date: -", call) for call in sock.calls]


CASES = {
    "publish answer": (PUBLISH, "202 Accepted",
                       [("Content-Type", "application/json"), ("Content-Length", "21")],
                       [b'{"id":"1","online":0}']),
    "event stream": (SUBSCRIBE, "200 OK", [("Content-Type", "text/event-stream")],
                     [b"retry: 3000\n\n", b"id: 1-1\ndata: hi\n\n"]),
    "stream whose first piece is empty": (SUBSCRIBE, "200 OK", [("Content-Type", "text/event-stream")],
                                          [b"", b"retry: 3000\n\n"]),
    "HEAD, body dropped": (HEAD, "200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")],
                           [b"{}"]),
    "no body at all": (SUBSCRIBE, "204 No Content", [("Cache-Control", "no-cache")], []),
}


@pytest.mark.parametrize("case", CASES)
def test_same_bytes_as_gunicorn(case):
    ours = answer(CoalescingResponse, *CASES[case])
    theirs = answer(wsgi.Response, *CASES[case])
    assert b"".join(ours) == b"".join(theirs)
    assert len(ours) <= len(theirs)


def test_head_and_first_body_write_leave_in_one_send():
    sends = answer(CoalescingResponse, *CASES["publish answer"])
    assert len(sends) == 1
    assert sends[0].startswith(b"HTTP/1.1 202 Accepted\r\n") and sends[0].endswith(b'{"id":"1","online":0}')
    stream = answer(CoalescingResponse, *CASES["event stream"])
    # head + first chunk, the next chunk, the last (empty) chunk
    assert len(stream) == 3
    assert stream[0].endswith(b"\r\n\r\nD\r\nretry: 3000\n\n\r\n")
    assert stream[2] == b"0\r\n\r\n"


def test_installed_once_for_http1():
    before = wsgi.Response
    try:
        assert use_coalescing_response()
        assert wsgi.Response is CoalescingResponse
        assert use_coalescing_response()
    finally:
        wsgi.Response = before
