"""Publish validation without HTTP: what is refused, with which status and field."""

from __future__ import annotations

import pytest

from pushsvc.config import Settings
from pushsvc.messages import InvalidInput, build_batch, build_message, check_groups, check_name
from pushsvc.model import Target

SETTINGS = Settings.load(environ={}, max_message_bytes=100, max_targets=3, max_groups=2, max_batch=3)


@pytest.mark.parametrize("name", ["u1", "ü-42", "a" * 128, "x.y:z@w", "名前"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * 129, "é" * 65, "a b", "a\tb", "a\nb", "a/b", "a\x00b", "a\x7fb", "a\u2028b",
             "a\u00a0b", "\ud800", 5, None],
)
def test_bad_names(name):
    with pytest.raises(InvalidInput):
        check_name(name)


def test_group_count_is_bounded():
    assert check_groups(["a", "b", "a"], SETTINGS) == ("a", "b")
    with pytest.raises(InvalidInput, match="at most 2"):
        check_groups(["a", "b", "c"], SETTINGS)


@pytest.mark.parametrize(
    ("fields", "target"),
    [
        ({"to": "u1", "data": "x"}, Target("to", ("u1",))),
        ({"to": ["u1", "u2", "u1"], "data": "x"}, Target("to", ("u1", "u2"))),
        ({"group": "g", "data": "x"}, Target("group", ("g",))),
        ({"prefix": "shop1-", "data": "x"}, Target("prefix", ("shop1-",))),
        ({"broadcast": True, "data": "x"}, Target("all")),
        ({"broadcast": "true", "data": "x"}, Target("all")),
        ({"to": "u1", "broadcast": False, "data": "x"}, Target("to", ("u1",))),
    ],
)
def test_targets(fields, target):
    assert build_message(fields, SETTINGS).target == target


@pytest.mark.parametrize(
    ("fields", "field", "status"),
    [
        ({"data": "x"}, "to", 400),
        ({"to": "a", "group": "g", "data": "x"}, "to", 400),
        ({"to": [], "data": "x"}, "to", 400),
        ({"to": ["a", "b", "c", "d"], "data": "x"}, "to", 400),
        ({"to": "a b", "data": "x"}, "to", 400),
        ({"to": 5, "data": "x"}, "to", 400),
        ({"broadcast": "maybe", "data": "x"}, "broadcast", 400),
        ({"to": "a"}, "data", 400),
        ({"to": "a", "data": None}, "data", 400),
        ({"to": "a", "data": "x" * 101}, "data", 413),
        ({"to": "a", "data": "\ud800"}, "data", 400),
        ({"to": "a", "data": "x", "event": "a\nb"}, "event", 400),
        ({"to": "a", "data": "x", "event": "a\x00"}, "event", 400),
        ({"to": "a", "data": "x", "event": ""}, "event", 400),
        ({"to": "a", "data": "x", "event": "e" * 65}, "event", 400),
        ({"to": "a", "data": "x", "event": 3}, "event", 400),
        *[({"to": "a", "data": "x", "event": name}, "event", 400)
          for name in ("open", "error", "close", "reset", "busy")],
        ({"to": "a", "data": "x", "retry": -1}, "retry", 400),
        ({"to": "a", "data": "x", "retry": True}, "retry", 400),
        ({"to": "a", "data": "x", "retry": "soon"}, "retry", 400),
        ({"to": "a", "data": "x", "id": "mine"}, "id", 400),
    ],
)
def test_refused(fields, field, status):
    with pytest.raises(InvalidInput) as info:
        build_message(fields, SETTINGS)
    assert info.value.field == field
    assert info.value.status == status


def test_batch_names_the_bad_index():
    ok = {"to": "a", "data": "x"}
    assert len(build_batch([ok, ok], SETTINGS)) == 2
    with pytest.raises(InvalidInput) as info:
        build_batch([ok, {"to": "a"}, ok], SETTINGS)
    assert info.value.index == 1 and "event 1" in info.value.message
    with pytest.raises(InvalidInput):
        build_batch([], SETTINGS)
    with pytest.raises(InvalidInput, match="at most 3"):
        build_batch([ok] * 4, SETTINGS)
