"""``create_app()``: the standalone service, with health, metrics and the demo page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, Response, render_template, send_from_directory
from werkzeug.exceptions import HTTPException
from xstatic.pkg import jquery as xstatic_jquery

from . import metrics
from .blueprint import healthz, json_http_error
from .extension import EXTENSION_KEY, Push
from .redact import RedactFilter

_HERE = Path(__file__).resolve().parent
# Installed, the demo page is pushsvc/templates; in a source checkout it is the top-level templates/.
TEMPLATES = _HERE / "templates"
if not (TEMPLATES / "index.html").exists():
    TEMPLATES = _HERE.parent / "templates"


def create_app(test_config: dict[str, Any] | None = None, **settings: Any) -> Flask:
    """Build the standalone pushsvc application.

    ``test_config`` is merged into ``app.config`` (its ``PUSHSVC`` key holds pushsvc settings);
    keyword arguments are pushsvc settings and win over everything else.
    """
    app = Flask(__name__, template_folder=str(TEMPLATES))
    app.config.from_mapping(JSON_SORT_KEYS=False)
    if test_config:
        app.config.from_mapping(test_config)
    push = Push(app, **settings)
    _configure_logging(app.extensions[EXTENSION_KEY].settings.log_level)

    @app.get("/")
    def index() -> tuple[str, dict[str, str]]:
        # The page's scripts and styles are its own files (no inline code), so a script injected into it
        # cannot run; its streams and API calls stay on this origin. data: is the page's empty favicon.
        policy = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
        page = render_template("index.html", prefix=push.service.settings.url_prefix)
        return page, {"Content-Security-Policy": policy}

    # The demo page's jQuery comes from the xstatic-jquery package, beside pushsvc.js: no CDN, so the
    # page works offline. More specific than the blueprint's static route, so this one answers.
    app.add_url_rule(f"{push.service.settings.url_prefix}/static/jquery.min.<any(js, map):ext>",
                     "jquery", _jquery)

    app.add_url_rule("/healthz", "healthz", healthz)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-cache"})

    app.register_error_handler(HTTPException, json_http_error)
    app.extensions["pushsvc.push"] = push
    return app


def _jquery(ext: str) -> Response:
    """jQuery (and its source map, which browser dev tools ask for) from the xstatic-jquery package."""
    return send_from_directory(xstatic_jquery.BASE_DIR, f"jquery.min.{ext}", max_age=86400)


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("pushsvc")
    logger.setLevel(level.upper())
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactFilter())
        logger.addHandler(handler)
