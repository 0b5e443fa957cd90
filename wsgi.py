"""The WSGI entry point of a source checkout: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from pushsvc.wsgi import app

__all__ = ["app"]
