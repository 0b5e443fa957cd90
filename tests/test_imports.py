"""Each entry point imports what it uses: the ``pushsvc`` command the standard library, gunicorn's arbiter
no library that must wait for gevent's patching, and ``import pushsvc`` nothing until a name is asked for.

Each check runs in a fresh interpreter, because this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pushsvc

from .servers import ROOT, free_port

# What serves HTTP, talks to Redis or checks tokens: none of it belongs in the command line tool.
SERVER_LIBRARIES = ("flask", "gevent", "prometheus_client", "redis", "jwt", "werkzeug")
# Libraries that hold sockets, threads or greenlets of their own: imported in the arbiter, before a worker
# forks and gevent patches the standard library, they would keep the unpatched versions.
BEFORE_PATCHING = ("gevent", "greenlet", "flask", "werkzeug", "jinja2", "redis", "hiredis", "jwt", "xstatic")
PUBLIC_NAMES = ("BrokerUnavailable", "ConfigError", "Event", "IdempotencyConflict", "InvalidInput", "Push",
                "Settings", "Stream", "create_app")


def run_python(code: str, *, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    """Run ``code`` in a fresh interpreter; its standard output, or the test fails with its error."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded(statement: str) -> list[str]:
    """Which of :data:`SERVER_LIBRARIES` a fresh interpreter has imported after ``statement``."""
    code = (f"import json, sys\n{statement}\n"
            f"print(json.dumps(sorted(m for m in {SERVER_LIBRARIES!r} if m in sys.modules)))")
    return json.loads(run_python(code))


def test_the_command_line_tool_imports_no_server_library():
    assert loaded("import pushsvc.cli") == []


def test_help_and_a_publish_import_no_server_library():
    # A publish to a port where nothing listens: the whole command runs, up to its one-line error.
    url = f"http://127.0.0.1:{free_port()}"
    publish = (f"from pushsvc.cli import main\n"
               f"assert main(['--url', {url!r}, 'publish', '--to', 'u1', 'hello']) == 1")
    assert loaded(publish) == []
    help_ = ("import contextlib, io\nfrom pushsvc.cli import main\n"
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "    main(['--help'])")
    assert loaded(help_) == []


def test_import_pushsvc_alone_imports_no_server_library():
    assert loaded("import pushsvc") == []
    assert loaded("import pushsvc.config, pushsvc.wire") == []


def test_the_gunicorn_settings_import_nothing_gevent_must_patch_first(tmp_path):
    # What the arbiter has imported by the time it reads the settings is the baseline: gunicorn itself
    # brings socket, ssl and threading, which gevent's worker patches in place after the fork.
    code = (
        "import json, sys\n"
        "import gunicorn.app.wsgiapp, gunicorn.arbiter\n"
        "before = set(sys.modules)\n"
        "import pushsvc.server.gunicorn_conf\n"
        "import os\n"
        "print(json.dumps({'new': sorted(set(sys.modules) - before), 'all': sorted(sys.modules),\n"
        "                  'dir': os.environ['PROMETHEUS_MULTIPROC_DIR']}))\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMETHEUS_MULTIPROC_DIR", "_PUSHSVC_METRICS_DIR_OWNER")}
    # Unless told where, the settings make a metrics directory of their own: let it be made here.
    env["TMPDIR"] = str(tmp_path)
    found = json.loads(run_python(code, env=env, cwd=tmp_path))

    assert [m for m in BEFORE_PATCHING if m in found["all"]] == []
    new_tops = {name.partition(".")[0] for name in found["new"]}
    third_party = new_tops - set(sys.stdlib_module_names) - {"pushsvc"}
    # gunicorn for the logger class; prometheus_client for child_exit, which forgets a dead worker's gauges.
    assert third_party <= {"gunicorn", "prometheus_client"}
    assert [m for m in ("socket", "ssl", "threading", "selectors") if m in found["new"]] == []
    assert not [m for m in found["new"] if m.startswith("pushsvc.brokers") or m in (
        "pushsvc.app", "pushsvc.service", "pushsvc.wsgi", "pushsvc.server.worker")]

    metrics_dir = Path(found["dir"])
    assert metrics_dir.parent == tmp_path
    # The interpreter that made the directory removed it when it exited, as an arbiter does.
    assert not metrics_dir.exists()


def test_the_public_names_are_there_when_asked_for():
    names = ", ".join(PUBLIC_NAMES)
    out = run_python(f"import pushsvc\nfrom pushsvc import {names}\nprint(' '.join(dir(pushsvc)))")
    listed = out.split()
    assert all(name in listed for name in PUBLIC_NAMES)
    assert sorted(pushsvc.__all__) == sorted(PUBLIC_NAMES)


def test_each_public_name_is_the_object_from_its_own_module():
    from pushsvc import app, config, extension, messages, wire
    from pushsvc.brokers import base

    assert pushsvc.create_app is app.create_app and pushsvc.Push is extension.Push
    assert pushsvc.Settings is config.Settings and pushsvc.ConfigError is config.ConfigError
    assert pushsvc.Event is wire.Event and pushsvc.InvalidInput is messages.InvalidInput
    assert pushsvc.BrokerUnavailable is base.BrokerUnavailable
    with pytest.raises(AttributeError, match="no attribute 'Pusher'"):
        _ = pushsvc.Pusher


def test_the_worker_class_imports_nothing_gevent_must_patch_first():
    # gunicorn's arbiter imports the worker class (-k) before it forks; the app comes in the worker.
    code = ("import json, sys\nimport gunicorn.app.wsgiapp, gunicorn.arbiter\nimport pushsvc.worker\n"
            "print(json.dumps(sorted(sys.modules)))")
    found = json.loads(run_python(code))
    assert [m for m in BEFORE_PATCHING if m in found and m not in ("gevent", "greenlet")] == []
    assert "pushsvc.service" not in found and "pushsvc.auth" not in found
