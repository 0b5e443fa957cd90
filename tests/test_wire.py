"""The encoder, byte for byte, and a round trip through a parser written from the HTML standard."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc import wire
from pushsvc.messages import InvalidInput, check_event_name

from .sse import ParseState, parse


@pytest.mark.parametrize(
    ("data", "event", "retry", "expected"),
    [
        ("hello", None, None, b"id: 7\ndata: hello\n\n"),
        ("", None, None, b"id: 7\ndata: \n\n"),
        ("a\nb", None, None, b"id: 7\ndata: a\ndata: b\n\n"),
        ("a\r\nb", None, None, b"id: 7\ndata: a\ndata: b\n\n"),
        ("a\rb", None, None, b"id: 7\ndata: a\ndata: b\n\n"),
        ("a\n\nb\n", None, None, b"id: 7\ndata: a\ndata: \ndata: b\ndata: \n\n"),
        ("x\u2028y\u0085z", None, None, "id: 7\ndata: x\u2028y\u0085z\n\n".encode()),
        ("ü", "greet", None, "id: 7\nevent: greet\ndata: ü\n\n".encode()),
        ("x", None, 2500, b"id: 7\nretry: 2500\ndata: x\n\n"),
        (" lead", None, None, b"id: 7\ndata:  lead\n\n"),
        ({"a": [1, 2], "b": "é"}, None, None, 'id: 7\ndata: {"a":[1,2],"b":"é"}\n\n'.encode()),
        (42, None, None, b"id: 7\ndata: 42\n\n"),
    ],
)
def test_encode_table(data, event, retry, expected):
    assert wire.encode("7", data, event=event, retry=retry) == expected


def test_comment_and_retry():
    assert wire.comment() == b":\n\n"
    assert wire.comment("a\nb") == b": a\n: b\n\n"
    assert wire.retry(3000) == b"retry: 3000\n\n"
    assert parse(wire.HEARTBEAT.decode()) == []


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
def test_event_name_and_id_cannot_carry_line_breaks(bad):
    with pytest.raises(wire.WireError):
        wire.encode_body("x", event=bad)
    with pytest.raises(wire.WireError):
        wire.frame(bad, b"data: x\n\n")


def test_encode_once_then_frame():
    body = wire.Event({"n": 1}, event="e").encode()
    assert wire.frame("1", body) == b'id: 1\nevent: e\ndata: {"n":1}\n\n'
    assert wire.frame("2", body) == b'id: 2\nevent: e\ndata: {"n":1}\n\n'


def _valid_event_name(name: str) -> bool:
    try:
        check_event_name(name)
    except InvalidInput:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(
    data=st.text(),
    event=st.one_of(st.none(), st.text(min_size=1, max_size=20).filter(_valid_event_name)),
    event_id=st.from_regex(r"[0-9A-Za-z._-]{1,64}", fullmatch=True),
    retry=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
)
def test_any_event_round_trips_through_a_conforming_parser(data, event, event_id, retry):
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates never reach the encoder: publish refuses them
    state = ParseState()
    encoded = wire.encode(event_id, data, event=event, retry=retry)
    # A heartbeat and a second event after it: nothing of the first may leak into the second.
    stream = wire.retry(3000) + encoded + wire.HEARTBEAT + wire.encode("next", "after")
    events = parse(stream.decode("utf-8"), state)
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert len(events) == 2
    first, second = events
    assert first.data == expected
    assert first.event == (event if event is not None else "message")
    assert first.id == event_id
    assert second.data == "after" and second.id == "next" and second.event == "message"
    assert state.retry == (retry if retry is not None else 3000)
