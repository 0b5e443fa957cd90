"""pushsvc.sendall: one send for a small write, and every byte still arrives in order for a large one."""

from __future__ import annotations

import gevent
import gevent.socket
import pytest
from gevent import _socketcommon

from pushsvc import sendall


@pytest.fixture
def installed():
    before = _socketcommon._sendall
    assert sendall.install()
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
    assert _socketcommon._sendall is sendall._sendall
    assert sendall.install()
    assert _socketcommon._sendall is sendall._sendall


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
