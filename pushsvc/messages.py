"""Turn what a publisher sent into :class:`~pushsvc.model.Message` objects, or say exactly what is wrong.

The one place a message is built: :func:`compose` validates and encodes Python values once, and every
route goes through it (``POST /sse/publish`` and the legacy forms by :func:`build_message`, the Python API,
and the service's own close event). No Flask here, so an event the API accepts is an event the HTTP surface
accepts, and the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import wire
from .config import Settings
from .model import Message, Target

MAX_NAME_BYTES = 128
MAX_EVENT_NAME_BYTES = 64
MAX_EVENT_ID_BYTES = 64
MAX_RETRY_MS = 24 * 3600 * 1000
RESERVED_EVENTS = frozenset({"open", "error", "close", "reset", "busy", "presence"})
TARGET_FIELDS = ("to", "group", "prefix", "broadcast")
ALLOWED_FIELDS = frozenset({*TARGET_FIELDS, "data", "event", "retry"})
CLOSE_DATA = {"reason": "closed by the server"}

# Whitespace of any script, "/" (path separator), and C0/C1 control characters.
_BAD_NAME_CHAR = re.compile(r"[\s/\x00-\x1f\x7f-\x9f]")
_EVENT_ID = re.compile(rf"[0-9A-Za-z._-]{{1,{MAX_EVENT_ID_BYTES}}}")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


class InvalidInput(ValueError):
    """A request pushsvc refuses. ``status`` is 400 or 413; ``field`` and ``index`` say where."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400,
                 index: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.index = index

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.index is not None:
            body["index"] = self.index
        return body


def check_name(value: Any, *, field: str = "client id") -> str:
    """A client id or group name: 1-128 bytes of UTF-8, no whitespace, control character or ``/``."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid UTF-8", field=field) from None
    if not 1 <= size <= MAX_NAME_BYTES:
        raise InvalidInput(f"{field} must be 1 to {MAX_NAME_BYTES} bytes of UTF-8", field=field)
    if _BAD_NAME_CHAR.search(value):
        raise InvalidInput(f"{field} must not contain whitespace, control characters or '/'", field=field)
    return value


def check_groups(values: Sequence[Any], settings: Settings) -> tuple[str, ...]:
    groups = tuple(dict.fromkeys(check_name(v, field="group") for v in values))
    if len(groups) > settings.max_groups:
        raise InvalidInput(f"at most {settings.max_groups} groups per connection", field="group")
    return groups


def check_flag(value: str | None, *, field: str) -> bool:
    """A query switch such as ``?presence=1``: absent or one of 1/0, true/false, yes/no, on/off."""
    if value is None:
        return False
    if value.strip().lower() not in _TRUE | _FALSE:
        raise InvalidInput(f"{field} must be 1 or 0 (true/false, yes/no, on/off)", field=field)
    return value.strip().lower() in _TRUE


def is_event_id(value: str) -> bool:
    """Does ``value`` look like an id pushsvc could have issued (so it is safe to echo)?"""
    return bool(_EVENT_ID.fullmatch(value))


def check_event_name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("event must be a string", field="event")
    if not value or len(value.encode("utf-8", "surrogatepass")) > MAX_EVENT_NAME_BYTES:
        raise InvalidInput(f"event must be 1 to {MAX_EVENT_NAME_BYTES} bytes", field="event")
    if not value.isprintable() or _has_surrogate(value):
        raise InvalidInput("event must be printable text (no control characters or line breaks)",
                           field="event")
    if value in RESERVED_EVENTS:
        raise InvalidInput(f"event name {value!r} is reserved by pushsvc", field="event")
    return value


def check_retry(value: Any) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRY_MS:
        raise InvalidInput(f"retry must be a whole number of milliseconds, 0 to {MAX_RETRY_MS}",
                           field="retry")
    return value


def check_data(value: Any, settings: Settings) -> str:
    text = wire.data_text(value)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("data is not valid UTF-8", field="data") from None
    if size > settings.max_message_bytes:
        raise InvalidInput(f"data is {size} bytes; the limit is {settings.max_message_bytes}",
                           field="data", status=413)
    return text


def compose(target: Target, data: Any, settings: Settings, *, event: str | None = None,
            retry: int | None = None) -> Message:
    """A validated message: ``data`` (a string, or any JSON value) encoded once, with its fields."""
    if data is None:
        raise InvalidInput("data is required", field="data")
    text = check_data(data, settings)
    event = None if event is None else check_event_name(event)
    retry = None if retry is None else check_retry(retry)
    return Message(target, wire.encode_body(text, event=event, retry=retry))


def close_message(client_id: str) -> Message:
    """``event: close`` for every stream of ``client_id``: the last event each of them gets."""
    body = wire.encode_body(wire.data_text(CLOSE_DATA), event="close")
    return Message(Target.clients([check_name(client_id)]), body, close=True)


def build_message(fields: Mapping[str, Any], settings: Settings) -> Message:
    """One publish object (``to``/``group``/``prefix``/``broadcast``, ``data``, ``event``, ``retry``)."""
    if not isinstance(fields, Mapping):
        raise InvalidInput("each event must be a JSON object")
    unknown = sorted(set(fields) - ALLOWED_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}",
                           field=unknown[0])
    return compose(build_target(fields, settings), fields.get("data"), settings,
                   event=fields.get("event"), retry=fields.get("retry"))


def build_target(fields: Mapping[str, Any], settings: Settings) -> Target:
    given = [name for name in TARGET_FIELDS if _is_set(fields, name)]
    if len(given) != 1:
        what = "no target" if not given else "more than one target (" + ", ".join(given) + ")"
        raise InvalidInput(f"{what}: give exactly one of to, group, prefix, broadcast", field="to")
    kind = given[0]
    value = fields[kind]
    if kind == "to":
        ids = [value] if isinstance(value, str) else value
        if not isinstance(ids, list) or not ids:
            raise InvalidInput("to must be a client id or a non-empty list of them", field="to")
        if len(ids) > settings.max_targets:
            raise InvalidInput(f"to lists more than {settings.max_targets} client ids", field="to")
        return Target.clients(check_name(i, field="to") for i in ids)
    if kind == "group":
        return Target.group(check_name(value, field="group"))
    if kind == "prefix":
        return Target.prefix(check_name(value, field="prefix"))
    return Target.everyone()


def _is_set(fields: Mapping[str, Any], name: str) -> bool:
    if name not in fields or fields[name] is None:
        return False
    if name != "broadcast":
        return True
    value = fields[name]
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, bool):
        return value
    raise InvalidInput("broadcast must be true or false", field="broadcast")


def build_batch(items: Any, settings: Settings) -> list[Message]:
    """A JSON array of publish objects: all valid, or an error naming the first bad index."""
    if not isinstance(items, list) or not items:
        raise InvalidInput("a batch must be a non-empty JSON array")
    if len(items) > settings.max_batch:
        raise InvalidInput(f"a batch holds at most {settings.max_batch} events")
    messages = []
    for index, item in enumerate(items):
        try:
            messages.append(build_message(item, settings))
        except InvalidInput as error:
            error.index = index
            error.message = f"event {index}: {error.message}"
            raise
    return messages


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
