"""pushsvc.js in headless Chromium against gunicorn: on a page of its own, and when things go wrong —
a proxy's 502/503, a server restart, a full server, two workers behind Redis."""

from __future__ import annotations

import time

from . import browser as tools
from .browser import (
    FAST,
    Watch,
    connections,
    entries,
    expect_state,
    fake_network_page,
    publish,
    subscribe_urls,
    wait_entry,
    wait_states,
)
from .helpers import wait_for
from .proxy import FlakyProxy
from .servers import Gunicorn, RedisServer
from .sse import RawStream

# The shared fixtures, under their own names so that pytest finds them here.
browser, open_page, page_server = tools.browser, tools.open_page, tools.page_server


OTHER_PAGE = """<!doctype html><meta charset="utf-8"><title>shop</title><link rel="icon" href="data:,">
<ul id="orders"></ul>
<script src="/sse/static/pushsvc.js"></script>
<script>
  var stream = PushSvc.subscribe({url: "/sse", clientId: "u42", groups: ["shop1"], events: ["order"]});
  stream.on("order", function (e) {
    var li = document.createElement("li");
    li.textContent = e.id + " " + JSON.parse(e.data).order;
    document.getElementById("orders").appendChild(li);
  });
  stream.on("state", function (s) { document.title = s.state; });
</script>
"""


def test_another_page_uses_pushsvc_js_alone(page_server, open_page):
    """The README's example: an application page with pushsvc.js and nothing else."""
    page, watch = open_page("about:blank")
    page.route(page_server.url("/shop.html"),
               lambda route: route.fulfill(body=OTHER_PAGE, content_type="text/html; charset=utf-8"))
    page.goto(page_server.url("/shop.html"))
    page.wait_for_function("document.title === 'open'")
    assert page.evaluate("typeof jQuery") == "undefined"
    first = publish(page_server, group="shop1", event="order", data={"order": 1001})
    page.locator("#orders li", has_text=f"{first} 1001").wait_for()
    page.reload()
    page.wait_for_function("document.title === 'open'")
    assert f"lastEventId={first}" in subscribe_urls(watch, "u42")[-1]
    second = publish(page_server, to="u42", event="order", data={"order": 1002})
    page.locator("#orders li", has_text=f"{second} 1002").wait_for()
    assert page.evaluate("stream.lastEventId") == second
    assert page.evaluate("PushSvc.stripCloseMark('1-2.close')") == "1-2"
    assert watch.errors == []


def test_the_state_table_without_a_ticket_source(page_server, open_page):
    """The table at the top of pushsvc.js, row by row, on a stand-in EventSource: the browser waits out
    [lost], [busy] and [ended] itself; [failed] backs off and probes, [unavailable] probes again later;
    closed is final."""
    page, watch = fake_network_page(open_page, page_server)
    page.evaluate("""window.stream = track(PushSvc.subscribe({url: "/sse", clientId: "st", storage: false,
                                                               minDelay: 40, maxDelay: 80}))""")
    wait_states(page, 1)
    page.evaluate("sources[0].fail(EventSource.CONNECTING)")  # [lost]
    page.evaluate("sources[0].open()")
    page.evaluate("""sources[0].fire("busy", '{"reason": "full", "retry": 500}')""")
    page.evaluate("sources[0].fail(EventSource.CONNECTING)")  # [busy]
    page.evaluate("sources[0].open()")
    page.evaluate("sources[0].fail(EventSource.CONNECTING)")  # [ended]
    page.evaluate("headStatus = [503, 200]; sources[0].fail(EventSource.CLOSED)")  # [failed], [unavailable]
    wait_states(page, 10)
    page.evaluate("""sources[1].open(); sources[1].fire("close", '{"reason": "bye"}', "7-1.close")""")
    states = wait_states(page, 12)
    assert [(s["state"], s["retries"], s.get("status"), s.get("reason")) for s in states] == [
        ("connecting", 0, None, None),
        ("connecting", 1, None, None),  # the browser reconnects after the server's retry:
        ("open", 1, None, None),
        ("busy", 1, None, "full"),
        ("busy", 2, None, "full"),
        ("open", 2, None, None),
        ("connecting", 3, None, None),
        ("retrying", 4, None, None),
        ("retrying", 5, 503, "the server cannot take the stream yet (HTTP 503)"),
        ("connecting", 5, None, None),
        ("open", 5, None, None),
        ("closed", 5, None, "bye"),
    ]
    assert states[3]["delay"] == states[4]["delay"] == 500, "the delay the server asked for"
    assert 20 <= states[7]["delay"] <= 60 and 40 <= states[8]["delay"] <= 120, "jittered, doubling"
    assert page.evaluate("heads") == ["HEAD /sse/subscribe/st", "HEAD /sse/subscribe/st"]

    page.evaluate("stream.close()")  # closed is final: not even "closed by the page" again
    time.sleep(0.3)
    assert page.evaluate("[states.length, sources.length, sources[1].closed, stream.lastEventId]") == \
        [12, 2, True, "7-1"]
    assert watch.page_errors() == []


def test_script_rebuilds_the_stream_after_502_and_503(page_server, open_page):
    proxy = FlakyProxy(page_server.port)
    try:
        page, watch = open_page(proxy.base + "/?clientId=demo-flaky&subscribe=1")
        expect_state(page, "open")
        publish(page_server, to="demo-flaky", data="one")
        wait_entry(page, "one")

        # The proxy drops the stream, then answers the browser's reconnect with 502: EventSource gives up.
        proxy.fail(502)
        proxy.cut()
        expect_state(page, "retrying")
        expect_state(page, "open")
        publish(page_server, to="demo-flaky", data="two")
        wait_entry(page, "two")

        # 503 twice: for the reconnect and for the first check before rebuilding; the backoff grows.
        proxy.fail(503, count=2)
        proxy.cut()
        expect_state(page, "retrying")
        expect_state(page, "open")
        publish(page_server, to="demo-flaky", data="three")
        wait_entry(page, "three")
    finally:
        proxy.close()
    assert [e["data"] for e in entries(page)] == ["one", "two", "three"]
    assert len(proxy.failed) == 3
    assert any(line.startswith("HEAD /sse/subscribe/demo-flaky") for line in proxy.seen)
    assert page.evaluate("demo.stream.retries") >= 3
    assert watch.page_errors() == []
    assert watch.foreign(proxy.base) == []


def test_script_comes_back_after_a_server_restart(open_page):
    with Gunicorn(env=FAST) as server:
        page, watch = open_page(server.url("/?clientId=demo-restart&subscribe=1"))
        expect_state(page, "open")
        publish(server, to="demo-restart", data="before the restart")
        wait_entry(page, "before the restart")
        server.stop()
        page.wait_for_function("document.querySelector('#state').dataset.state !== 'open'")
        server.start()
        expect_state(page, "open")
        # The in-memory history went with the old process: the page is told so, and carries on.
        page.locator("#log li.warn", has_text="could not be replayed").wait_for()
        assert wait_for(lambda: connections(server, "demo-restart") == 1, 5)
        publish(server, to="demo-restart", data="after the restart")
        wait_entry(page, "after the restart")
        assert watch.page_errors() == []


def test_script_waits_out_a_busy_server(open_page):
    with Gunicorn(env={**FAST, "PUSHSVC_MAX_CONNECTIONS": "1"}) as server:
        holder = RawStream(server.port, "/sse/subscribe/demo-holder")
        try:
            assert holder.read_until(b"retry:", 5)
            page, watch = open_page(server.url("/?clientId=demo-busy&subscribe=1"))
            expect_state(page, "busy")
            page.locator("#log li.warn", has_text="busy").first.wait_for()  # one per refusal
            assert connections(server, "demo-busy") == 0
            # Another page gives up while it waits: Close stops its retries too.
            quitter, quitter_watch = open_page(server.url("/?clientId=demo-quitter&subscribe=1"))
            expect_state(quitter, "busy")
            quitter.click("#close")
            expect_state(quitter, "closed")
            gave_up = len(subscribe_urls(quitter_watch, "demo-quitter"))
        finally:
            holder.close()
        came_back = wait_for(lambda: connections(server, "demo-busy") == 1, 8)
        assert came_back, "the page comes back once there is room"
        assert len(subscribe_urls(quitter_watch, "demo-quitter")) == gave_up, "no retry after Close"
        expect_state(page, "open")
        publish(server, to="demo-busy", data="room at last")
        wait_entry(page, "room at last")
        assert watch.page_errors() == []


def test_with_redis_and_two_workers_close_and_reload_hold(open_page):
    """Behind two workers the page's stream, its close and its resume may each land on another one."""
    redis = RedisServer().start()
    try:
        with Gunicorn(workers=2, env={**FAST, "PUSHSVC_BROKER_URL": redis.url}) as server:
            page, watch = open_page(server.url("/?clientId=demo-redis&subscribe=1"))
            expect_state(page, "open")
            seen = publish(server, to="demo-redis", data="one")
            wait_entry(page, "one")
            page.close()
            assert wait_for(lambda: connections(server, "demo-redis") == 0, 5)
            missed = publish(server, to="demo-redis", data="while away")
            page = page.context.new_page()
            watch = Watch.attach(page)
            page.goto(server.url("/"))
            assert wait_entry(page, "while away")["id"] == missed
            assert f"lastEventId={seen}" in subscribe_urls(watch, "demo-redis")[-1]

            asked = len(subscribe_urls(watch, "demo-redis"))
            page.click("#close")
            expect_state(page, "closed")
            assert wait_for(lambda: connections(server, "demo-redis") == 0, 5)
            time.sleep(1.0)
            assert len(subscribe_urls(watch, "demo-redis")) == asked
            page.click("#subscribe")
            expect_state(page, "open")
            publish(server, to="demo-redis", data="after the close")
            wait_entry(page, "after the close")
            assert page.get_attribute("#state", "data-state") == "open"
            assert watch.errors == []
    finally:
        redis.cleanup()
