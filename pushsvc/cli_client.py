"""The few HTTP calls the ``pushsvc`` command makes, and its one-line errors. Standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode


class CliError(Exception):
    """Something to tell the user in one line, then exit with status 1."""


class Client:
    """The few HTTP calls the commands need."""

    def __init__(self, url: str, prefix: str, token: str | None, timeout: float):
        self.base = url.rstrip("/") + "/" + prefix.strip("/")
        self.token = token
        self.timeout = timeout

    def url(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        return self.base + path + ("?" + urlencode(query) if query else "")

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """Send a request and return its JSON answer; HTTP and network errors become a :class:`CliError`."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url(path), data=data, method=method,
                                         headers={**self.headers(), **(headers or {})})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as error:
            raise CliError(describe_http_error(error)) from None
        except (urllib.error.URLError, OSError) as error:
            raise CliError(f"cannot reach {self.base}: {reason(error)}") from None
        except ValueError:
            raise CliError(f"{self.base} did not answer JSON; is it a pushsvc server?") from None

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}


def describe_http_error(error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read()).get("error")
    except (ValueError, AttributeError, OSError):
        message = None
    return f"the server answered {error.code} {error.reason}" + (f": {message}" if message else "")


def reason(error: BaseException) -> str:
    inner = getattr(error, "reason", None)
    return str(inner if inner is not None else error) or type(error).__name__
