"""Browser tests' tools: headless Chromium through Playwright, a page watcher, fixtures, and helpers
that drive the demo page and talk to the server behind it.

Chromium is Debian's (``/usr/bin/chromium``), never a downloaded one. Without it the browser tests skip,
unless ``PUSHSVC_REQUIRE_BROWSER=1`` (as in CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from .servers import Gunicorn, require

CHROMIUM = "/usr/bin/chromium"
REQUIRE_FLAG = "PUSHSVC_REQUIRE_BROWSER"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# Settings that make a test server quick to observe: reconnects after 300 ms, heartbeats every second,
# and a short graceful timeout, so a stopped server does not wait 10 s for the streams of a test page.
FAST = {"PUSHSVC_HEARTBEAT_SECONDS": "1", "PUSHSVC_RETRY_MS": "300", "PUSHSVC_BUSY_RETRY_MS": "400",
        "PUSHSVC_GRACEFUL_TIMEOUT": "2"}
WAIT_MS = 10_000
DESKTOP = {"width": 1200, "height": 760}
# What Chromium itself logs for a failed request (a 502, a refused connection): the point of the
# recovery tests, not a fault of the page.
NETWORK_NOISE = ("Failed to load resource", "net::ERR_")
CSP_VIOLATION = "CSP violation:"
# Run in every page before its own scripts (Playwright's init scripts are not subject to the page's
# policy): a Content-Security-Policy violation becomes a console error, which Watch collects.
CSP_LISTENER = f"""document.addEventListener("securitypolicyviolation", function (e) {{
  console.error("{CSP_VIOLATION} " + e.effectiveDirective + " refused " + (e.blockedURI || "?"));
}});"""


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium, closed afterwards; skips (or fails, in CI) when it cannot be had."""
    executable = require(CHROMIUM, REQUIRE_FLAG)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get(REQUIRE_FLAG) == "1":
            pytest.fail(f"the playwright package is not installed, and {REQUIRE_FLAG}=1 says it must be")
        pytest.skip("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watch:
    """What a page did: console errors (Content-Security-Policy violations among them), uncaught
    exceptions, and every URL it asked for."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @classmethod
    def attach(cls, page) -> Watch:
        watch = cls()
        page.add_init_script(CSP_LISTENER)
        page.on("console", lambda m: watch.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: watch.requests.append(r.url))
        return watch

    def page_errors(self) -> list[str]:
        """The errors that are the page's own, without the browser's reports of failed requests."""
        return [e for e in self.errors if not any(n in e for n in NETWORK_NOISE)]

    def violations(self) -> list[str]:
        """What the page's Content-Security-Policy refused."""
        return [e for e in self.errors if e.startswith(f"console: {CSP_VIOLATION}")]

    def foreign(self, origin: str) -> list[str]:
        """Requests that left ``origin`` (data: and about: URLs stay in the page)."""
        return [u for u in self.requests
                if not (u.startswith(origin + "/") or u.startswith(("data:", "about:")))]

    def count(self, part: str) -> int:
        return sum(part in u for u in self.requests)


# A page with pushsvc.js on a stand-in network, to walk its state table step by step: ``sources`` are the
# EventSources it built (a test opens them, fires events and fails them), ``heads`` the probes it sent
# (answered from ``headStatus``), ``states`` every "state" notification, ``track(stream)`` records them.
FAKE_NETWORK_PAGE = """<!doctype html><meta charset="utf-8"><title>states</title>
<link rel="icon" href="data:,">
<script src="/sse/static/pushsvc.js"></script>
<script>
  var sources = [], heads = [], headStatus = [], states = [];
  function FakeSource(url) { this.url = url; this.readyState = 0; this.on = {}; sources.push(this); }
  FakeSource.CONNECTING = 0; FakeSource.OPEN = 1; FakeSource.CLOSED = 2;
  FakeSource.prototype.addEventListener = function (name, f) {
    (this.on[name] = this.on[name] || []).push(f);
  };
  FakeSource.prototype.close = function () { this.readyState = 2; this.closed = true; };
  FakeSource.prototype.open = function () { this.readyState = 1; this.onopen(); };
  FakeSource.prototype.fail = function (readyState) { this.readyState = readyState; this.onerror(); };
  FakeSource.prototype.fire = function (name, data, id) {
    (this.on[name] || []).forEach(function (f) { f({data: data, lastEventId: id || ""}); });
  };
  window.EventSource = FakeSource;
  window.fetch = function (url, init) {
    heads.push(init.method + " " + url);
    return Promise.resolve({status: headStatus.shift()});
  };
  function track(stream) { stream.on("state", function (s) { states.push(s); }); return stream; }
</script>
"""


def fake_network_page(open_page, server: Gunicorn):
    """``FAKE_NETWORK_PAGE`` on ``server``'s origin (which serves pushsvc.js): (page, watch)."""
    page, watch = open_page("about:blank")
    page.route(server.url("/states.html"),
               lambda route: route.fulfill(body=FAKE_NETWORK_PAGE, content_type="text/html; charset=utf-8"))
    page.goto(server.url("/states.html"))
    return page, watch


def wait_states(page, count: int) -> list[dict]:
    """The first ``count`` state notifications, once there are that many."""
    page.wait_for_function(f"states.length >= {count}")
    return page.evaluate(f"states.slice(0, {count})")


# -- fixtures (a test module takes them with ``browser, open_page = tools.browser, tools.open_page``) --


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless Chromium per test module."""
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def page_server(browser) -> Iterator[Gunicorn]:
    """One gunicorn for the tests that need nothing special (after the browser: no browser, no server)."""
    with Gunicorn(env=FAST) as gunicorn:
        yield gunicorn


@pytest.fixture
def open_page(browser) -> Iterator[Callable]:
    """``open_page(url)`` -> (page, watch), each in a fresh browser profile; all closed after the test."""
    contexts = []

    def open_page(url: str, viewport: dict[str, int] | None = None):
        context = browser.new_context(viewport=viewport or DESKTOP)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        watch = Watch.attach(page)
        page.goto(url)
        return page, watch

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def open_tabs(browser) -> Iterator[Callable]:
    """``open_tabs(url, count, init_script=None)`` -> [(page, watch)]: ``count`` tabs of one browser profile
    (one context: shared storage, locks and channels, as the tabs of one browser window), each loaded in
    turn; ``init_script`` runs in every page before its own scripts. All closed after the test."""
    contexts = []

    def open_tabs(url: str, count: int, init_script: str | None = None) -> list[tuple]:
        context = browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        tabs = []
        for _ in range(count):
            page = context.new_page()
            watch = Watch.attach(page)
            page.goto(url)
            tabs.append((page, watch))
        return tabs

    yield open_tabs
    for context in contexts:
        context.close()


# -- the demo page and its server ------------------------------------------------------------------


def subscribe(page, client_id: str, group: str = "") -> None:
    page.fill("#client-id", client_id)
    page.fill("#group", group)
    page.click("#subscribe")
    expect_state(page, "open")


def expect_state(page, state: str) -> None:
    page.wait_for_selector(f'#state[data-state="{state}"]')


def role(page) -> str:
    """What the demo page says of its stream: "holder", "follower", "alone" or "none"."""
    return page.get_attribute("#sharing", "data-role")


def send(page, content: str, target: str = "this client", event: str = "") -> None:
    page.click(f"#target label:has-text('{target}')")
    page.fill("#event-name", event)
    page.fill("#content", content)
    page.click("#send")


def wait_entry(page, data: str) -> dict[str, str]:
    page.locator("#log li.entry .data", has_text=re.compile("^" + re.escape(data) + "$")).wait_for()
    return next(e for e in entries(page) if e["data"] == data)


def entries(page) -> list[dict[str, str]]:
    return page.eval_on_selector_all("#log li.entry", """els => els.map(e => ({
        id: e.dataset.id, name: e.dataset.name, time: e.querySelector("time").textContent,
        data: e.querySelector(".data").textContent}))""")


def publish(server: Gunicorn, prefix: str = "/sse", headers: dict[str, str] | None = None, **body) -> str:
    reply = httpx.post(server.url(f"{prefix}/publish"), json=body, headers=headers, timeout=5)
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def connections(server: Gunicorn, client_id: str, prefix: str = "/sse") -> int:
    reply = httpx.get(server.url(f"{prefix}/clients/{client_id}"), timeout=5)
    return reply.json()["connections"] if reply.status_code == 200 else 0


def subscribe_urls(watch: Watch, client_id: str) -> list[str]:
    return [u for u in watch.requests if f"/subscribe/{client_id}" in u]
