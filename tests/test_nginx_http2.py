"""HTTP/2 in front: ``deploy/nginx-http2.conf`` with Debian's nginx (TLS, HTTP/2 to the browser, HTTP/1.1
to gunicorn) and headless Chromium. Over HTTP/1.1 six connections per host would hold six streams at
most; over HTTP/2 twenty tabs with two unshared streams each all receive.

The certificate is self-signed, made here with Debian's openssl, and Chromium's context is told to accept
it. Skipped where nginx, openssl or Chromium are missing (``PUSHSVC_REQUIRE_NGINX=1`` /
``PUSHSVC_REQUIRE_BROWSER=1``: a failure).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from . import browser as tools
from .browser import FAST, WAIT_MS
from .helpers import wait_for
from .servers import Gunicorn, free_port, require
from .test_nginx import Nginx

browser = tools.browser

TABS = 20
STREAMS_PER_TAB = 2
SITE_CERT = "ssl_certificate     /etc/ssl/certs/push.example.com.pem;"
SITE_KEY = "ssl_certificate_key /etc/ssl/private/push.example.com.key;"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key."""
    openssl = require("openssl", "PUSHSVC_REQUIRE_NGINX")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def open_streams(gunicorn: Gunicorn) -> int:
    return httpx.get(gunicorn.url("/sse/clients"), timeout=5).json()["connections"]


@pytest.fixture(scope="module")
def proxied(browser, tmp_path_factory) -> Iterator[tuple[Gunicorn, Nginx]]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    with Gunicorn(env=FAST) as gunicorn:
        edits = (("listen 80;", f"listen 127.0.0.1:{free_port()};"),
                 (SITE_CERT, f"ssl_certificate {cert};"), (SITE_KEY, f"ssl_certificate_key {key};"))
        nginx = Nginx(gunicorn.port, site="nginx-http2.conf", listen="listen 443 ssl http2;", scheme="https",
                      edits=edits)
        try:
            yield gunicorn, nginx.start()
        finally:
            nginx.stop()


def test_twenty_tabs_with_two_unshared_streams_each_all_receive_over_http2(browser, proxied):
    gunicorn, nginx = proxied
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(WAIT_MS)
    try:
        pages = []
        for tab in range(TABS):
            page = context.new_page()
            page.goto(nginx.base + "/")
            assert page.evaluate('performance.getEntriesByType("navigation")[0].nextHopProtocol') == "h2"
            page.evaluate("""tab => {
                window.got = {};
                window.streams = ["a", "b"].map(k => {
                    const s = PushSvc.subscribe({url: "/sse", clientId: "h2-" + tab + "-" + k, shared: false,
                                                 storage: false});
                    s.on("message", e => (got[k] = got[k] || []).push(e.id));
                    return s;
                });
            }""", tab)
            pages.append(page)
        for page in pages:
            # Functions, not strings: the demo page's policy forbids eval.
            page.wait_for_function("() => streams.every(s => s.state === 'open')")
        total = TABS * STREAMS_PER_TAB
        assert wait_for(lambda: open_streams(gunicorn) == total, 10), "all open at once, far past six"
        assert pages[0].evaluate("streams.map(s => s.role)") == ["alone", "alone"]

        everyone = httpx.post(gunicorn.url("/sse/publish"), json={"broadcast": True, "data": "all"},
                              timeout=5)
        assert everyone.status_code == 202 and everyone.json()["online"] == total
        last = everyone.json()["id"]
        for page in pages:
            page.wait_for_function("() => got.a && got.b && got.a.length === 1 && got.b.length === 1")
            assert page.evaluate("[got.a, got.b]") == [[last], [last]]
    finally:
        context.close()

    # nginx logs a request when it ends: every subscribe, now closed, came over HTTP/2.
    log = nginx.dir / "access.log"

    def subscribes() -> list[str]:
        return [line for line in log.read_text().splitlines() if "/sse/subscribe/h2-" in line]

    assert wait_for(lambda: len(subscribes()) == total, 10), subscribes()
    assert all('HTTP/2.0"' in line for line in subscribes())
