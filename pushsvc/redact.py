"""Keep credentials out of logs: ``?token=`` and ``?ticket=`` values, bearer tokens, anything JWT-shaped.

A subscriber that cannot set headers (``EventSource``) puts its token or ticket in the URL, and URLs end
up in access logs, error lines and log shippers. :class:`RedactFilter` rewrites every record that passes
through a logger or handler it is attached to; ``gunicorn.conf.py`` attaches it to gunicorn's error and
access logs. Standard library only.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

SECRET_PARAMS = frozenset({"token", "ticket", "access_token"})
REDACTED = "[redacted]"

# A query string inside any text: from "?" up to whitespace, a quote or the end.
_QUERY = re.compile(r"\?[^\s\"'<>]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
# Three base64url parts, the first a JSON header: a JWT, wherever it turns up (a cookie header, a body).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact_query(query: str) -> str:
    """``query`` (without ``?``) with the value of every secret parameter replaced."""
    parts = re.split(r"([&;])", query)
    for index in range(0, len(parts), 2):
        name, eq, _ = parts[index].partition("=")
        # Decode the name as a server would: "?%74oken=" is still the token parameter.
        if eq and unquote_plus(name).strip().lower() in SECRET_PARAMS:
            parts[index] = f"{name}={REDACTED}"
    return "".join(parts)


def redact(text: str) -> str:
    """``text`` with query secrets, bearer tokens and JWTs replaced by ``[redacted]``."""
    if "?" in text:
        text = _QUERY.sub(lambda m: "?" + redact_query(m.group()[1:]), text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _JWT.sub(REDACTED, text)


class RedactFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record (it never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Format the traceback now, so the handler prints the redacted text instead.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
