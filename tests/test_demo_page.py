"""The demo page in headless Chromium against gunicorn: what a newcomer sees first.

Each test drives the page as a person would (fill, click, reload) and checks both what the page shows and
what the server saw. Timings are shortened through settings (retry 300 ms, heartbeat 1 s), not sleeps.
"""

from __future__ import annotations

import os
import re
import time

import httpx
import jwt

from . import browser as tools
from .browser import (
    FAST,
    Watch,
    connections,
    entries,
    expect_state,
    publish,
    send,
    subscribe,
    subscribe_urls,
    wait_entry,
)
from .helpers import wait_for
from .servers import ROOT, Gunicorn

# The shared fixtures, under their own names so that pytest finds them here.
browser, open_page, page_server = tools.browser, tools.open_page, tools.page_server


# -- the page ----------------------------------------------------------------------------------------


def test_send_from_the_page_and_publish_over_http(page_server, open_page):
    page, watch = open_page(page_server.url("/"))
    assert page.evaluate("jQuery.fn.jquery") == "3.7.1"
    subscribe(page, "demo-basic")
    assert page.evaluate("demo.stream._source instanceof EventSource")
    assert wait_for(lambda: connections(page_server, "demo-basic") == 1, 5)

    send(page, "hello from the page")
    wait_entry(page, "hello from the page")
    event_id = publish(page_server, to="demo-basic", data={"order": 42})
    received = wait_entry(page, '{"order":42}')
    assert received["id"] == event_id and received["name"] == "message"
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", received["time"])
    send(page, "with a name", event="greeting")
    assert wait_entry(page, "with a name")["name"] == "greeting"
    assert [e["data"] for e in entries(page)] == ["hello from the page", '{"order":42}', "with a name"]
    assert page.text_content("#last-id") == entries(page)[-1]["id"]

    row = page.locator('#clients tr[data-client="demo-basic"] td.connections')
    row.wait_for()
    assert row.text_content() == "1"
    assert watch.errors == []
    assert watch.foreign(page_server.base) == [], "the page must work without internet"
    assert watch.count("/sse/static/jquery.min.js") == 1 and watch.count("/sse/static/pushsvc.js") == 1


def test_the_page_works_under_its_content_security_policy(page_server, open_page):
    """`/` forbids inline script and style; the page, whose code is all in files, works the same."""
    policy = httpx.get(page_server.url("/"), timeout=5).headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy
    page, watch = open_page(page_server.url("/?clientId=demo-csp&subscribe=1"))
    expect_state(page, "open")
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px", "demo.css applies"
    send(page, "under the policy")
    wait_entry(page, "under the policy")
    publish(page_server, to="demo-csp", data="over http")
    wait_entry(page, "over http")
    page.locator('#clients tr[data-client="demo-csp"]').wait_for()
    assert watch.count("/sse/static/demo.js") == 1 and watch.count("/sse/static/demo.css") == 1
    assert watch.violations() == [] and watch.errors == []

    # The policy holds, and the watch would have seen a breach: an inline script is refused, and said.
    with page.expect_console_message(lambda m: "CSP violation" in m.text):
        page.evaluate("""() => { const s = document.createElement("script");
                                 s.textContent = "window.injected = true"; document.body.append(s); }""")
    assert page.evaluate("window.injected") is None
    assert watch.violations() == ["console: CSP violation: script-src-elem refused inline"]


def test_group_broadcast_and_the_live_client_list(page_server, open_page):
    url = page_server.url("/")
    a, watch_a = open_page(url)
    subscribe(a, "demo-ga", "demo-room")
    b, _ = open_page(url)
    subscribe(b, "demo-gb", "demo-room")
    c, _ = open_page(url)
    subscribe(c, "demo-gc")

    send(a, "to the room", target="the group")
    wait_entry(a, "to the room")
    wait_entry(b, "to the room")
    send(c, "to everyone", target="everyone")
    for page in (a, b, c):
        wait_entry(page, "to everyone")
    # Per-connection order is publish order: had c been sent the group event, it would be there by now.
    assert [e["data"] for e in entries(c)] == ["to everyone"]
    assert [e["data"] for e in entries(b)] == ["to the room", "to everyone"]

    # A second tab of demo-gb (same browser profile: it subscribes again by itself) shares b's stream:
    # it gets the room's events, and a's list still counts one stream for demo-gb.
    count = a.locator('#clients tr[data-client="demo-gb"] td.connections')
    count.wait_for()
    assert b.get_attribute("#sharing", "data-role") == "holder"
    b2 = b.context.new_page()
    b2.goto(url)
    b2.wait_for_selector('#sharing[data-role="follower"]')
    assert b2.text_content("#sharing") == "shared from another tab"
    send(a, "to the room again", target="the group")
    wait_entry(b2, "to the room again")
    wait_entry(b, "to the room again")
    assert connections(page_server, "demo-gb") == 1 and count.text_content() == "1"
    assert "demo-room" in a.text_content('#clients tr[data-client="demo-gb"]')
    assert watch_a.errors == []


def test_close_ends_the_stream_and_nothing_reconnects(page_server, open_page):
    page, watch = open_page(page_server.url("/"))
    subscribe(page, "demo-close")
    publish(page_server, to="demo-close", data="before the close")
    wait_entry(page, "before the close")

    asked = len(subscribe_urls(watch, "demo-close"))
    page.click("#close")
    expect_state(page, "closed")
    assert wait_for(lambda: connections(page_server, "demo-close") == 0, 5)
    time.sleep(1.2)  # four times the server's retry: a reconnecting browser would have asked by now
    assert len(subscribe_urls(watch, "demo-close")) == asked, "not even the reconnect that gets 204"
    assert connections(page_server, "demo-close") == 0
    resume_point = page.evaluate("demo.stream.lastEventId")
    assert resume_point and not resume_point.endswith(".close")

    # Subscribing again is accepted (not 204) and not ended by a replay of the close that came before.
    page.click("#subscribe")
    expect_state(page, "open")
    assert f"lastEventId={resume_point}" in subscribe_urls(watch, "demo-close")[-1]
    publish(page_server, to="demo-close", data="after the close")
    wait_entry(page, "after the close")
    assert page.get_attribute("#state", "data-state") == "open"
    assert watch.errors == []


def test_reload_resumes_with_the_missed_events(page_server, open_page):
    page, watch = open_page(page_server.url("/"))
    subscribe(page, "demo-reload")
    seen = publish(page_server, to="demo-reload", data="before the reload")
    wait_entry(page, "before the reload")

    missed: list[str] = []

    def publish_while_away(route) -> None:
        # The reloaded page is about to subscribe: whatever is sent now, it has not seen.
        if not missed:
            missed.extend(publish(page_server, to="demo-reload", data=f"missed {n}") for n in (1, 2))
        route.continue_()

    page.route(re.compile(r"/subscribe/demo-reload"), publish_while_away)
    page.reload()
    wait_entry(page, "missed 2")
    page.unroute(re.compile(r"/subscribe/demo-reload"))
    assert [(e["id"], e["data"]) for e in entries(page)] == [(missed[0], "missed 1"), (missed[1], "missed 2")]
    assert f"lastEventId={seen}" in subscribe_urls(watch, "demo-reload")[-1]
    publish(page_server, to="demo-reload", data="live again")
    wait_entry(page, "live again")
    assert page.locator("#log li.warn").count() == 0, "nothing was lost, so no reset"
    assert watch.errors == []


def test_bad_input_is_refused_and_said_not_retried(page_server, open_page):
    page, watch = open_page(page_server.url("/"))
    page.fill("#client-id", "two words")
    page.click("#subscribe")
    expect_state(page, "refused")
    asked = len(subscribe_urls(watch, "two%20words"))
    time.sleep(1.2)
    assert len(subscribe_urls(watch, "two%20words")) == asked, "a 400 is final: no retry loop"
    assert "400" in page.text_content("#log li.error")

    subscribe(page, "demo-bad-input")
    send(page, "reserved", event="close")
    page.locator("#log li.error", has_text="POST /publish: 400").wait_for()
    send(page, "no group", target="the group")
    page.locator("#log li.warn", has_text="Enter a group first").wait_for()
    assert entries(page) == [] and page.get_attribute("#state", "data-state") == "open"
    assert watch.page_errors() == []


def test_readable_on_a_phone(page_server, open_page):
    page, watch = open_page(page_server.url("/"), viewport={"width": 375, "height": 740})
    subscribe(page, "demo-phone-with-a-rather-long-client-id", "demo-phone-group")
    send(page, "a long line without spaces " + "x" * 200)
    wait_entry(page, "a long line without spaces " + "x" * 200)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for selector in ("#subscribe", "#close", "#send", "#content"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert watch.errors == []


# -- settings ----------------------------------------------------------------------------------------


def test_page_follows_the_url_prefix_and_the_tokens(open_page):
    secret = "demo-page-secret-of-at-least-32-bytes"
    env = {**FAST, "PUSHSVC_URL_PREFIX": "/push", "PUSHSVC_JWT_SECRET": secret,
           "PUSHSVC_PUBLISH_TOKEN": "demo-publisher-token"}
    admin = {"Authorization": "Bearer demo-publisher-token"}
    with Gunicorn(env=env) as server:
        claims = {"sub": "demo-jwt", "groups": ["demo-team"], "exp": int(time.time()) + 600}
        token = jwt.encode(claims, secret, algorithm="HS256")
        page, watch = open_page(server.url(f"/?clientId=demo-jwt&group=demo-team&token={token}"
                                           "&publishToken=demo-publisher-token&subscribe=1"))
        expect_state(page, "open")
        send(page, "behind a prefix", target="the group")
        wait_entry(page, "behind a prefix")
        publish(server, "/push", headers=admin, to="demo-jwt", data="over http")
        wait_entry(page, "over http")
        page.locator('#clients tr[data-client="demo-jwt"]').wait_for()
        assert watch.count("/push/static/jquery.min.js") == 1 and watch.count("/push/static/pushsvc.js") == 1
        assert f"token={token}" in subscribe_urls(watch, "demo-jwt")[-1]
        assert [u for u in watch.requests if "/sse/" in u] == []
        assert watch.errors == []

        # Without a token the stream is refused for good, and the page says so instead of retrying.
        if httpx.head(server.url("/push/subscribe/demo-jwt"), timeout=5).status_code == 401:
            bare, bare_watch = open_page(server.url("/?clientId=demo-jwt&subscribe=1"))
            expect_state(bare, "refused")
            assert "401" in bare.text_content("#log") and "?token=" in bare.text_content("#log")
            assert bare.text_content("#clients-summary") == "needs ?publishToken="
            assert bare_watch.page_errors() == []


# -- the screenshot in the README --------------------------------------------------------------------


def test_screenshot_of_the_page_in_use(page_server, open_page, tmp_path):
    """docs/demo.png: rewritten when PUSHSVC_UPDATE_SCREENSHOT=1, else made in a temporary folder."""
    bob, _ = open_page(page_server.url("/?clientId=bob&group=ops"))
    subscribe(bob, "bob", "ops")
    # Alice has two tabs open: the picture is of the second, which shares the first one's stream.
    first, _ = open_page(page_server.url("/?clientId=alice&group=ops&events=order"))
    subscribe(first, "alice", "ops")
    page = first.context.new_page()
    watch = Watch.attach(page)
    page.goto(page_server.url("/?clientId=alice&group=ops&events=order"))
    expect_state(page, "open")
    page.wait_for_selector('#sharing[data-role="follower"]')
    send(page, "Hello, ops!", target="the group")
    wait_entry(page, "Hello, ops!")
    publish(page_server, to="alice", event="order", data={"order": 1001, "status": "shipped"})
    wait_entry(page, '{"order":1001,"status":"shipped"}')
    send(page, "Deploy finished", target="everyone")
    wait_entry(page, "Deploy finished")
    page.locator('#clients tr[data-client="bob"]').wait_for()
    assert connections(page_server, "alice") == 1
    page.click("#target label:has-text('the group')")
    page.fill("#content", "Hi Bob")
    if os.environ.get("PUSHSVC_UPDATE_SCREENSHOT") == "1":
        path = ROOT / "docs" / "demo.png"
        path.parent.mkdir(exist_ok=True)
    else:
        path = tmp_path / "demo.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    assert watch.errors == []
