"""gunicorn's logger for pushsvc: its error and access logs never carry a token, a ticket or a cookie."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from ..redact import RedactFilter, redact_query


class RedactingLogger(Logger):
    """gunicorn's logger, minus credentials, whatever access_log_format a deployer picks: the request line
    (%(r)s), the query (%(q)s), a referer, the Authorization and Cookie headers, and error lines."""

    _QUERY_ATOMS = ("q", "{query_string}e")
    _SECRET_HEADERS = ("{authorization}i", "{cookie}i")

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactFilter) for f in logger.filters):
                logger.addFilter(RedactFilter())

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        for key in self._QUERY_ATOMS:
            if atoms.get(key):
                atoms[key] = redact_query(atoms[key])
        for key in self._SECRET_HEADERS:
            if key in atoms:
                atoms[key] = "[redacted]"
        # The request line and RAW_URI are redacted by the filter, which sees the whole formatted line.
        return atoms
