"""Tabs share one stream: the demo page in many tabs of one headless Chromium profile, over HTTP/1.1.

One tab holds the EventSource (a Web Lock per stream key), the others get its events over a
BroadcastChannel. Each test proves "every event once, none lost" by the full list of what each tab
shows after a marker published last (events reach a tab in publish order, so a missing or doubled one
shows up ahead of the marker).
"""

from __future__ import annotations

import itertools
import threading
import time

import httpx

from . import browser as tools
from .browser import (
    connections,
    entries,
    expect_state,
    publish,
    role,
    subscribe_urls,
    wait_entry,
)
from .helpers import wait_for
from .servers import Gunicorn

# The shared fixtures, under their own names so that pytest finds them here.
browser, open_tabs, page_server = tools.browser, tools.open_tabs, tools.page_server

# What the contract promises for a tab that goes away: another one holds the stream within this.
TAKEOVER_SECONDS = 2
# Web Locks removed before the page's scripts run, as in a browser that has none.
NO_WEB_LOCKS = "delete Navigator.prototype.locks;"

_markers = itertools.count()


def demo_tabs(open_tabs, server: Gunicorn, client_id: str, count: int, query: str = "", init_script=None):
    """``count`` tabs of the demo page, subscribed as ``client_id``, each open: [(page, watch)]."""
    tabs = open_tabs(server.url(f"/?clientId={client_id}&subscribe=1{query}"), count, init_script)
    for page, _ in tabs:
        expect_state(page, "open")
    return tabs


def holder(pages) -> object:
    """The one tab that holds the stream, once there is exactly one."""
    assert wait_for(lambda: [role(p) for p in pages].count("holder") == 1, TAKEOVER_SECONDS * 2)
    return next(p for p in pages if role(p) == "holder")


def marker(server: Gunicorn, client_id: str, pages) -> str:
    """Publish a marker to ``client_id`` and wait for it in every one of ``pages``: its id."""
    data = f"marker-{next(_markers)}"
    event_id = publish(server, to=client_id, data=data)
    for page in pages:
        wait_entry(page, data)
    return event_id


def shown(page) -> list[tuple[str, str]]:
    return [(e["id"], e["data"]) for e in entries(page)]


class Publisher(threading.Thread):
    """Publishes ``count`` events to ``client_id``, one every ``interval`` seconds, meanwhile."""

    def __init__(self, server: Gunicorn, client_id: str, count: int = 40, interval: float = 0.025):
        super().__init__(daemon=True)
        self.server, self.client_id, self.count, self.interval = server, client_id, count, interval
        self.sent: list[tuple[str, str]] = []

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            for n in range(self.count):
                body = {"to": self.client_id, "data": f"n{n}"}
                reply = http.post(self.server.url("/sse/publish"), json=body)
                assert reply.status_code == 202, reply.text
                self.sent.append((reply.json()["id"], f"n{n}"))
                time.sleep(self.interval)

    def finish(self) -> list[tuple[str, str]]:
        self.join(30)
        assert not self.is_alive() and len(self.sent) == self.count
        return self.sent


def test_ten_tabs_on_http_1_1_all_load_and_get_every_event_once(page_server, open_tabs):
    """Six connections per host would stop the seventh tab with a stream of its own: ten load here."""
    tabs = demo_tabs(open_tabs, page_server, "share-ten", 10, "&events=greeting")
    pages = [page for page, _ in tabs]
    assert pages[0].evaluate('performance.getEntriesByType("navigation")[0].nextHopProtocol') == "http/1.1"
    first = holder(pages)
    assert first is pages[0], "the first tab takes the lock, the others wait for it"
    assert [role(p) for p in pages[1:]] == ["follower"] * 9
    assert pages[5].text_content("#sharing") == "shared from another tab"
    assert first.text_content("#sharing") == "this tab holds the stream"
    assert connections(page_server, "share-ten") == 1
    assert sum(len(subscribe_urls(w, "share-ten")) for _, w in tabs) == 1

    sent = [(publish(page_server, to="share-ten", data="one"), "one"),
            (publish(page_server, to="share-ten", event="greeting", data="hi"), "hi")]
    sent.append((marker(page_server, "share-ten", pages), entries(pages[9])[-1]["data"]))
    for page in pages:
        assert shown(page) == sent
        assert [e["name"] for e in entries(page)] == ["message", "greeting", "message"]
        assert page.text_content("#last-id") == sent[-1][0]
    # The server saw at most two streams for the ten tabs (one, and a moment of two at a takeover).
    assert connections(page_server, "share-ten") <= 2
    assert pages[3].locator('#clients tr[data-client="share-ten"] td.connections').text_content() == "1"
    for _, watch in tabs:
        assert watch.errors == []


def test_the_holder_closing_while_events_are_published_loses_and_doubles_none(page_server, open_tabs):
    tabs = demo_tabs(open_tabs, page_server, "share-gone", 3)
    pages = [page for page, _ in tabs]
    gone = holder(pages)
    rest = [p for p in pages if p is not gone]
    publisher = Publisher(page_server, "share-gone")
    publisher.start()
    assert wait_for(lambda: len(publisher.sent) >= 10, 10)
    started = time.monotonic()
    gone.close()
    new = holder(rest)
    expect_state(new, "open")
    took = time.monotonic() - started
    assert took < TAKEOVER_SECONDS, f"another tab held the stream {took:.2f} s after the holder went"
    sent = publisher.finish()
    last = marker(page_server, "share-gone", rest)
    for page in rest:
        assert shown(page) == [*sent, (last, shown(page)[-1][1])], "every event once, in order"
    assert wait_for(lambda: connections(page_server, "share-gone") == 1, 5)
    # The new holder resumed from the last id it had seen, not from the start.
    resumed = subscribe_urls(dict(tabs)[new], "share-gone")
    assert len(resumed) == 1 and "lastEventId=" in resumed[0]


def test_a_reload_of_the_holder_hands_the_stream_over(page_server, open_tabs):
    tabs = demo_tabs(open_tabs, page_server, "share-reload", 2)
    pages = [page for page, _ in tabs]
    reloaded = holder(pages)
    other = next(p for p in pages if p is not reloaded)
    publisher = Publisher(page_server, "share-reload", count=30)
    publisher.start()
    assert wait_for(lambda: len(publisher.sent) >= 5, 10)
    reloaded.reload()
    expect_state(reloaded, "open")
    assert holder(pages) is other, "the tab that stayed took over; the reloaded one joins behind it"
    assert role(reloaded) == "follower"
    sent = publisher.finish()
    last = marker(page_server, "share-reload", pages)
    assert shown(other) == [*sent, (last, shown(other)[-1][1])]
    # The reloaded tab shows what came after it was back, once each and in order.
    after = shown(reloaded)
    assert after[-1][0] == last and after[:-1] == sent[len(sent) - len(after) + 1:]
    assert connections(page_server, "share-reload") == 1


def test_server_close_reaches_every_tab_and_none_reconnects(page_server, open_tabs):
    tabs = demo_tabs(open_tabs, page_server, "share-close", 3)
    pages = [page for page, _ in tabs]
    holder(pages)
    asked = sum(len(subscribe_urls(w, "share-close")) for _, w in tabs)
    reply = httpx.post(page_server.url("/sse/close/share-close"), timeout=5)
    assert reply.json() == {"closed": 1}, "one stream for the three tabs"
    for page in pages:
        expect_state(page, "closed")
        page.locator("#log li.note", has_text="Closed: ").wait_for()
        assert role(page) == "none"
    assert wait_for(lambda: connections(page_server, "share-close") == 0, 5)
    # Past the holder's linger (1 s) and four times the server's retry: a tab taking over, or a browser
    # reconnecting, would have asked by now.
    time.sleep(2)
    assert sum(len(subscribe_urls(w, "share-close")) for _, w in tabs) == asked
    assert httpx.post(page_server.url("/sse/publish"), json={"to": "share-close", "data": "x"},
                      timeout=5).json()["online"] == 0
    for _, watch in tabs:
        assert watch.errors == []


def test_stream_close_in_one_tab_ends_that_tab_only(page_server, open_tabs):
    tabs = demo_tabs(open_tabs, page_server, "share-quit", 3)
    pages = [page for page, _ in tabs]
    first = holder(pages)
    follower, last = [p for p in pages if p is not first]

    follower.evaluate("demo.stream.close()")
    expect_state(follower, "closed")
    one = marker(page_server, "share-quit", [first, last])
    assert [e["id"] for e in entries(follower)] == []
    assert shown(first) == shown(last) == [(one, shown(first)[0][1])]

    # The holder leaves: the last tab takes over, resumes and is the only one left.
    first.evaluate("demo.stream.close()")
    expect_state(first, "closed")
    assert holder([last]) is last
    expect_state(last, "open")
    two = marker(page_server, "share-quit", [last])
    assert [i for i, _ in shown(last)] == [one, two]
    assert [i for i, _ in shown(first)] == [one] and entries(follower) == []
    assert wait_for(lambda: connections(page_server, "share-quit") == 1, 5)

    # The last one out closes the connection.
    last.evaluate("demo.stream.close()")
    assert wait_for(lambda: connections(page_server, "share-quit") == 0, 5)


def test_tabs_listen_to_their_own_event_names(page_server, open_tabs):
    """The holder listens to every tab's names; each tab reports only its own."""
    context_tabs = open_tabs(page_server.url("/?clientId=share-names&subscribe=1"), 1)
    plain = context_tabs[0][0]
    expect_state(plain, "open")
    orders = plain.context.new_page()
    orders.goto(page_server.url("/?clientId=share-names&subscribe=1&events=order"))
    expect_state(orders, "open")
    assert role(plain) == "holder" and role(orders) == "follower"
    order = publish(page_server, to="share-names", event="order", data="1001")
    wait_entry(orders, "1001")
    last = marker(page_server, "share-names", [plain, orders])
    assert [i for i, _ in shown(plain)] == [last]
    assert [i for i, _ in shown(orders)] == [order, last]


def test_without_web_locks_each_tab_has_its_own_stream(page_server, open_tabs):
    tabs = demo_tabs(open_tabs, page_server, "share-none", 3, init_script=NO_WEB_LOCKS)
    pages = [page for page, _ in tabs]
    assert pages[0].evaluate("navigator.locks") is None
    assert [role(p) for p in pages] == ["alone"] * 3
    assert pages[0].text_content("#sharing") == "own stream (not shared)"
    assert wait_for(lambda: connections(page_server, "share-none") == 3, 5)
    last = marker(page_server, "share-none", pages)
    for page in pages:
        assert [i for i, _ in shown(page)] == [last]


def test_shared_false_opts_out(page_server, open_tabs):
    tabs = open_tabs(page_server.url("/"), 2)
    pages = [page for page, _ in tabs]
    for page in pages:
        page.evaluate("""() => {
            window.got = [];
            window.own = PushSvc.subscribe({url: "/sse", clientId: "share-off", shared: false,
                                            storage: false});
            own.on("message", e => got.push(e.id));
        }""")
        page.wait_for_function("() => own.state === 'open'")  # a function: the page forbids eval
    assert [p.evaluate("own.role") for p in pages] == ["alone", "alone"]
    assert wait_for(lambda: connections(page_server, "share-off") == 2, 5)
    event_id = publish(page_server, to="share-off", data="to both")
    for page in pages:
        page.wait_for_function("() => got.length === 1")
        assert page.evaluate("got") == [event_id]
