"""The WSGI entry point: ``gunicorn -c python:pushsvc.server.gunicorn_conf pushsvc.wsgi:app``."""

from __future__ import annotations

from .app import create_app

app = create_app()
