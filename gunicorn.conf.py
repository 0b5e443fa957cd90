"""gunicorn settings for pushsvc in a source checkout: ``gunicorn -c gunicorn.conf.py wsgi:app``.

The settings themselves live in the package, so an installed wheel runs the same server:
``gunicorn -c python:pushsvc.server.gunicorn_conf pushsvc.wsgi:app``. Each is explained there.
"""

from pushsvc.server.gunicorn_conf import *  # noqa: F403
