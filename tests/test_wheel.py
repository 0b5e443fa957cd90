"""The wheel runs the server: built from this tree, installed alone in a fresh venv far from the checkout,
``gunicorn -c python:pushsvc.server.gunicorn_conf pushsvc.wsgi:app`` serves the demo page, streams,
publishes, metrics, and drains on SIGTERM, as the README says.

Nothing is downloaded. The fresh venv gets the wheel with ``--no-deps`` and sees this venv's third-party
packages through a ``.pth`` file holding the path of this venv's site-packages. A plain path line in a
``.pth`` is added to ``sys.path`` without running that directory's own ``.pth`` files, so the checkout's
editable install stays invisible there: the ``pushsvc`` it imports is the wheel's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .servers import ROOT, free_port, stop_process
from .sse import RawStream

# What a build needs from the tree; copied, so the build's own build/ and egg-info stay out of the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "pushsvc", "templates")
SERVE = ("-m", "gunicorn", "-c", "python:pushsvc.server.gunicorn_conf", "pushsvc.wsgi:app")


@dataclass
class Installed:
    """A fresh venv holding only the wheel, and an environment to run its programs in."""

    root: Path
    python: Path
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=60)


def can_build_wheels() -> bool:
    """setuptools builds wheels by itself from 70.1; before that it needs the wheel package."""
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        major, minor = (int(part) for part in version("setuptools").split(".")[:2])
        if (major, minor) >= (70, 1):
            return True
        version("wheel")
        return True
    return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not can_build_wheels():
        pytest.fail("setuptools < 70.1 without the wheel package cannot build a wheel offline; "
                    "pip install -e '.[dev]' brings a newer setuptools")
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("pushsvc-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("venv")
    assert not root.resolve().is_relative_to(ROOT)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([str(python), "-c", where], text=True, timeout=30).strip())
    this_venv = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_pushsvc_test_dependencies.pth").write_text("".join(f"{path}\n" for path in this_venv))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", str(wheel)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PUSHSVC_", "PYTHON", "PROMETHEUS_", "_PUSHSVC_")) and k != "VIRTUAL_ENV"}
    env.update({"PATH": f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
                "TMPDIR": str(tmp_path_factory.mktemp("tmp"))})
    return Installed(root, python, env, cwd=tmp_path_factory.mktemp("cwd"))


def test_the_wheel_holds_every_module_static_file_template_and_py_typed(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "pushsvc"
    expected = {f"pushsvc/{p.relative_to(package)}" for p in package.rglob("*.py")
                if "__pycache__" not in p.parts}
    expected |= {f"pushsvc/static/{p.name}" for p in (package / "static").iterdir() if p.is_file()}
    expected |= {f"pushsvc/templates/{p.name}" for p in (ROOT / "templates").glob("*.html")}
    expected.add("pushsvc/py.typed")
    assert {"pushsvc/brokers/redis/broker.py", "pushsvc/server/gunicorn_conf.py", "pushsvc/server/logging.py",
            "pushsvc/wsgi.py", "pushsvc/static/pushsvc.js", "pushsvc/templates/index.html"} <= expected
    assert sorted(expected - names) == []


def test_the_venv_imports_the_wheel_not_the_checkout(installed: Installed):
    done = installed.run(str(installed.python), "-c",
                         "import flask, pushsvc, pushsvc.wsgi, pushsvc.server.gunicorn_conf as c\n"
                         "print(pushsvc.__file__); print(c.__file__); print(flask.__file__)")
    assert done.returncode == 0, done.stderr
    ours, conf, flask = (Path(line).resolve() for line in done.stdout.split())
    root = installed.root.resolve()
    assert ours.is_relative_to(root) and conf.is_relative_to(root), "imported from the checkout"
    assert not ours.is_relative_to(ROOT)
    assert not flask.is_relative_to(root)  # this venv's, through the .pth file


def test_the_console_script_runs(installed: Installed):
    done = installed.run(str(installed.root / "bin" / "pushsvc"), "--help")
    assert done.returncode == 0, done.stderr
    assert "publish" in done.stdout and "listen" in done.stdout


@contextlib.contextmanager
def serving(installed: Installed, log: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """The README's command, from the fresh venv, in a directory with nothing of pushsvc in it."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(installed.python), *SERVE, "--bind", f"127.0.0.1:{port}"],
                                cwd=installed.cwd, env=installed.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        end = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"gunicorn exited with {proc.returncode}:\n{log.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < end, f"gunicorn did not answer within 20 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield proc, port
    finally:
        stop_process(proc)


def test_the_wheel_serves_streams_publishes_the_demo_and_metrics_and_drains(installed: Installed, tmp_path):
    log = tmp_path / "gunicorn.log"
    with serving(installed, log) as (proc, port), httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                                               timeout=5) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/sse/static/pushsvc.js" in page.text
        script = http.get("/sse/static/pushsvc.js")
        assert script.status_code == 200 and "PushSvc" in script.text
        assert http.get("/sse/static/jquery.min.js").status_code == 200

        stream = RawStream(port, "/sse/subscribe/u1")
        try:
            assert stream.status == 200 and stream.read_until(b"retry: 3000\n")
            sent = http.post("/sse/publish", json={"to": "u1", "data": "from the wheel"})
            assert sent.status_code == 202 and sent.json()["online"] == 1, sent.text
            assert stream.read_until(b"data: from the wheel\n\n"), stream.body
            [event] = stream.events()
            assert (event.id, event.data) == (sent.json()["id"], "from the wheel")

            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            # Summed from the worker's files in the metrics directory the settings made.
            published = re.compile(r"^pushsvc_events_published_total\{[^}]*\} 1\.0$", re.M)
            assert published.search(metrics.text), metrics.text

            # The draining worker: the open stream gets its last comment and a retry of its own.
            os.kill(proc.pid, signal.SIGTERM)
            assert stream.wait_closed(15), stream.body
            assert re.search(rb": restarting\n\nretry: \d+\n\n$", stream.body), stream.body[-200:]
        finally:
            stream.close()
        assert proc.wait(timeout=15) == 0, log.read_text()
    assert "draining worker" in log.read_text()
    assert not list(Path(installed.env["TMPDIR"]).glob("pushsvc-metrics-*")), "the arbiter removes its dir"
