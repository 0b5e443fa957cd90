"""Running pushsvc under gunicorn: its settings, the draining worker, the process tuning, the logger.

Nothing here is imported by the application itself except :mod:`.peer`; importing this package imports
nothing (the gunicorn arbiter reads :mod:`.gunicorn_conf` before any worker patches the standard library).
"""
