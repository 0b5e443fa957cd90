"""pushsvc.server.runtime: one send for a small write (every byte still arrives for a large one), GC tuned
once."""

from __future__ import annotations

import gc

import gevent
import gevent.socket
import pytest
from gevent import _socketcommon

from pushsvc.server import runtime


@pytest.fixture
def installed():
    before = _socketcommon._sendall
    assert runtime.install_sendall()
    yield
    _socketcommon._sendall = before


def pair() -> tuple[gevent.socket.socket, gevent.socket.socket]:
    server = gevent.socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = gevent.socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    server.close()
    return client, accepted


def read_all(sock: gevent.socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_install_replaces_gevents_sendall_once(installed):
    assert _socketcommon._sendall is runtime._sendall
    assert runtime.install_sendall()
    assert _socketcommon._sendall is runtime._sendall


def test_a_small_write_takes_no_buffer_size_query(installed, monkeypatch):
    writer, reader = pair()
    asked = []
    monkeypatch.setattr(gevent.socket.socket, "getsockopt",
                        lambda self, *args: asked.append(args) or 1 << 16)
    try:
        writer.sendall(b"data: x\n\n")
        assert read_all(reader, 9) == b"data: x\n\n"
        assert asked == []
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_a_write_larger_than_the_socket_buffer_arrives_whole(installed, timeout):
    # 8 MiB cannot go in one send: the remainder goes through gevent's own loop, with or without timeout.
    writer, reader = pair()
    writer.settimeout(timeout)
    payload = bytes(range(256)) * (8 * 4096)
    try:
        receiving = gevent.spawn(read_all, reader, len(payload))
        writer.sendall(payload)
        assert receiving.get(timeout=20) == payload
    finally:
        writer.close()
        reader.close()


def test_an_empty_write_sends_nothing(installed):
    writer, reader = pair()
    try:
        writer.sendall(b"")
        writer.sendall(b"end")
        assert read_all(reader, 3) == b"end"
    finally:
        writer.close()
        reader.close()


def test_tune_sets_gc_thresholds_once_per_process(monkeypatch):
    before = gc.get_threshold()
    monkeypatch.setattr(runtime, "_tuned_in", None)
    monkeypatch.setattr(runtime, "install_sendall", lambda: True)
    try:
        runtime.tune()
        assert gc.get_threshold() == runtime.GC_THRESHOLDS
        gc.set_threshold(*before)
        runtime.tune()  # already tuned in this process: leaves the settings alone
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
