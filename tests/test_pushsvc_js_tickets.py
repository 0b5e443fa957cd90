"""pushsvc.js with one-time connect tickets, in headless Chromium against gunicorn: every connection gets a
fresh ticket, a drop or a restart resumes with ?lastEventId= and no ticket is ever sent twice, a busy
server is waited out, and a ticket endpoint that says no stops the page without a retry loop."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from . import browser as tools
from .browser import FAST, fake_network_page, publish, subscribe_urls, wait_states
from .helpers import wait_for
from .proxy import FlakyProxy
from .servers import Gunicorn, RedisServer
from .sse import RawStream

# The shared fixtures, under their own names so that pytest finds them here.
browser, open_page, open_tabs = tools.browser, tools.open_page, tools.open_tabs

SECRET = "js-ticket-test-secret-0123456789-abcdefghij"
ENV = {**FAST, "PUSHSVC_JWT_SECRET": SECRET, "PUSHSVC_ACCESS_LOG": "-"}

# {options} is the rest of the subscribe options, as JavaScript; {base} is pushsvc's origin, empty for the
# page's own. The page records what the tests check.
PAGE = """<!doctype html><meta charset="utf-8"><title>new</title><link rel="icon" href="data:,">
<script src="{base}/sse/static/pushsvc.js"></script>
<script>
  var JWT = {jwt};
  var got = [], states = [], asked = 0;
  var stream = PushSvc.subscribe({{url: "{base}/sse", clientId: {client}, storage: false, minDelay: 300,
                                   maxDelay: 2000, {options}}});
  stream.on("*", function (e) {{ got.push({{id: e.id, name: e.name, data: e.data}}); }});
  stream.on("state", function (s) {{ states.push(s); document.title = s.state; }});
</script>
"""
# The README's form: the page's own code asks for the ticket and hands over the fetch Response.
TICKET_FUNCTION = """ticket: function () {
    asked += 1;
    return fetch("/sse/tickets", {method: "POST", headers: {Authorization: "Bearer " + JWT}});
  }"""


def token(sub: str, secret: str = SECRET) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, secret, algorithm="HS256")


def open_ticket_page(open_page, origin: str, client_id: str, options: str, jwt_value: str):
    """A plain application page on pushsvc's own ``origin`` that subscribes with ``options``."""
    page, watch = open_page("about:blank")
    html = PAGE.format(jwt=json.dumps(jwt_value), client=json.dumps(client_id), options=options, base="")
    page.route(origin + "/app.html", lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(origin + "/app.html")
    return page, watch


@contextlib.contextmanager
def app_origin(html: str) -> Iterator[str]:
    """Serve ``html`` at ``/app.html`` of an origin of its own: the application's server, not pushsvc.

    A real server, not a Playwright route: Chromium lets only a page that came from a loopback address
    reach another loopback origin (Local Network Access).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def expect_title(page, state: str) -> None:
    page.wait_for_function(f"document.title === {json.dumps(state)}")


def wait_data(page, data: str) -> None:
    page.wait_for_function(f"got.some(function (e) {{ return e.data === {json.dumps(data)}; }})")


def send(server: Gunicorn, client_id: str, data: str) -> tuple[str, int]:
    """Publish ``data`` to ``client_id``: its event id and how many streams were open to take it."""
    reply = httpx.post(server.url("/sse/publish"), json={"to": client_id, "data": data}, timeout=5)
    assert reply.status_code == 202, reply.text
    return reply.json()["id"], reply.json()["online"]


def tickets_sent(request_lines: list[str]) -> list[str]:
    """The ``ticket`` of every subscribe (GET or HEAD) that went through the proxy, in order."""
    sent = []
    for line in request_lines:
        method, target = line.split(" ")[:2]
        if method in ("GET", "HEAD") and "/subscribe/" in target:
            sent.extend(parse_qs(urlsplit(target).query).get("ticket", ["<none>"]))
    return sent


@pytest.fixture(scope="module")
def server(browser) -> Iterator[Gunicorn]:
    """One gunicorn that wants subscriber tokens, for the tests that need nothing special."""
    with Gunicorn(env=ENV) as gunicorn:
        yield gunicorn


def test_the_state_table_with_a_ticket_source(server, open_page):
    """With tickets the script, not the browser, reconnects: [ended] and [lost] back off, [busy] waits the
    server's delay, [ticket-failed] backs off and asks again, and a final 4xx for a ticket is refused."""
    page, watch = fake_network_page(open_page, server)
    page.evaluate("""window.no = function (status) {  // the ticket endpoint's fetch Response, saying no
                       return {status: status, ok: false, json: function () {}};
                     };
                     window.answers = ["k1"];
                     window.stream = track(PushSvc.subscribe({url: "/sse", clientId: "tt", storage: false,
                         minDelay: 40, maxDelay: 80, ticket: function () { return answers.shift(); }}))""")
    page.wait_for_function("sources.length === 1")
    page.evaluate("sources[0].open()")
    page.evaluate("answers.push(no(503), 'k2'); sources[0].fail(EventSource.CONNECTING)")  # [ended]
    page.wait_for_function("sources.length === 2")
    page.evaluate("answers.push('k3'); sources[1].fail(EventSource.CONNECTING)")  # [lost]
    page.wait_for_function("sources.length === 3")
    page.evaluate("""sources[2].open(); sources[2].fire("busy", '{"reason": "full", "retry": 300}');
                     answers.push(no(403)); sources[2].fail(EventSource.CONNECTING)""")  # [busy]
    states = wait_states(page, 13)
    no_ticket = "no ticket: the ticket endpoint answered HTTP "
    assert [(s["state"], s["retries"], s.get("status"), s.get("reason")) for s in states] == [
        ("connecting", 0, None, None),
        ("open", 0, None, None),
        ("connecting", 1, None, None),  # waiting out the backoff, then a new stream
        ("connecting", 1, None, None),
        ("retrying", 2, 503, no_ticket + "503"),
        ("connecting", 2, None, None),
        ("retrying", 3, None, None),
        ("connecting", 3, None, None),
        ("open", 3, None, None),
        ("busy", 3, None, "full"),
        ("busy", 4, None, "full"),
        ("connecting", 4, None, None),
        ("refused", 4, 403, no_ticket + "403"),
    ]
    assert 20 <= states[2]["delay"] <= 60, "the backoff starts over after an open stream"
    assert 40 <= states[4]["delay"] <= 120 and 40 <= states[6]["delay"] <= 120, "and doubles, to maxDelay"
    assert states[9]["delay"] == states[10]["delay"] == 300
    time.sleep(0.3)
    assert page.evaluate("states.length") == 13
    # Every stream had a ticket of its own and was closed by the script: none reconnected by itself.
    urls = page.evaluate("sources.map(s => [s.url, !!s.closed])")
    assert urls == [[f"/sse/subscribe/tt?ticket=k{n}", True] for n in (1, 2, 3)]
    assert watch.page_errors() == []


def test_each_connection_has_a_fresh_ticket_and_resumes(open_page):
    """A cut stream and a restarted server: the page comes back with new tickets, loses nothing and
    sees nothing twice; no ticket goes out twice and the server never has to refuse one."""
    with Gunicorn(env=ENV) as server:
        proxy = FlakyProxy(server.port)
        try:
            jwt_value = token("tk-page")
            page, watch = open_ticket_page(open_page, proxy.base, "tk-page", TICKET_FUNCTION, jwt_value)
            expect_title(page, "open")
            one = publish(server, to="tk-page", data="one")
            wait_data(page, "one")

            # The stream is cut and the ticket endpoint fails twice: the page is away for a while, and
            # what is published meanwhile must come with the resume.
            proxy.fail(503, count=2, match="POST /sse/tickets")
            proxy.cut()
            expect_title(page, "retrying")
            away = [send(server, "tk-page", data) for data in ("two", "three")]
            assert [online for _, online in away] == [0, 0], "published while the page is away"
            (two, _), (three, _) = away
            wait_data(page, "three")
            expect_title(page, "open")
            resumed = [line for line in proxy.seen if line.startswith("GET /sse/subscribe/tk-page")][-1]
            assert f"lastEventId={one}" in resumed
            assert [(e["id"], e["data"]) for e in page.evaluate("got")] == [(one, "one"), (two, "two"),
                                                                           (three, "three")]

            # A proxy's 502 for the subscribe itself: the script probes with HEAD before it rebuilds the
            # stream, and the probe spends a fresh ticket of its own.
            proxy.fail(502, count=1, match="GET /sse/subscribe/")
            proxy.cut()
            expect_title(page, "retrying")
            expect_title(page, "open")
            assert any(line.startswith("HEAD /sse/subscribe/tk-page?") for line in proxy.seen)
            four = publish(server, to="tk-page", data="four")
            wait_data(page, "four")
            assert [e["id"] for e in page.evaluate("got")] == [one, two, three, four]

            # A restart: the page's reconnects meet a proxy with nothing behind it (502), then a new server
            # that has no history (reset) and none of the old tickets.
            server.stop()
            page.wait_for_function("document.title !== 'open'")
            server.start()
            expect_title(page, "open")
            page.wait_for_function("got.some(e => e.name === 'reset')")
            assert wait_for(lambda: httpx.get(server.url("/sse/clients/tk-page")).status_code == 200, 5)
            five = publish(server, to="tk-page", data="five")
            wait_data(page, "five")
            assert page.evaluate("stream.lastEventId") == five
        finally:
            proxy.close()

        sent = tickets_sent(proxy.seen)
        assert len(sent) >= 6, proxy.seen
        assert len(set(sent)) == len(sent), "a ticket went out twice"
        assert "<none>" not in sent
        asked = page.evaluate("asked")
        assert asked >= len(sent) + 2, "the two failed ticket requests were asked again"
        assert len(proxy.failed) == 3
        # Neither the long-lived token nor a ?token= ever appears in a URL.
        assert not [u for u in watch.requests if jwt_value in u or "token=" in u]
        log = server.output()
        assert re.search(r'"GET /sse/subscribe/tk-page HTTP/1.1" 200', log)
        assert not re.search(r'"(GET|HEAD) /sse/subscribe/\S+ HTTP/1.1" 40[13]', log), log
        assert page.evaluate("states.filter(s => s.state === 'refused' || s.state === 'closed').length") == 0
        assert watch.page_errors() == []


def test_a_restart_behind_redis_resumes_with_a_new_ticket(open_page):
    """With Redis the history outlives the server: what another server published while the page's one was
    down comes with the resume, after a new ticket (the old one is spent) from the restarted server."""
    redis = RedisServer().start()
    try:
        env = {**ENV, "PUSHSVC_BROKER_URL": redis.url}
        with Gunicorn(env=env) as server, Gunicorn(env=env) as other:
            proxy = FlakyProxy(server.port)
            try:
                page, watch = open_ticket_page(open_page, proxy.base, "tk-redis", TICKET_FUNCTION,
                                               token("tk-redis"))
                expect_title(page, "open")
                one = publish(other, to="tk-redis", data="one")
                wait_data(page, "one")
                server.stop()
                page.wait_for_function("document.title !== 'open'")
                two = publish(other, to="tk-redis", data="two")
                three = publish(other, to="tk-redis", data="three")
                server.start()
                wait_data(page, "three")
                expect_title(page, "open")
                four = publish(other, to="tk-redis", data="four")
                wait_data(page, "four")
                # The draining server said busy (come back later); the rest is the events, once each.
                got = page.evaluate("got.filter(e => e.name === 'message')")
                assert [e["id"] for e in got] == [one, two, three, four]
            finally:
                proxy.close()
            sent = tickets_sent(proxy.seen)
            assert len(sent) >= 2 and len(set(sent)) == len(sent), proxy.seen
            assert f"lastEventId={one}" in [s for s in proxy.seen if s.startswith("GET /sse/subscribe/")][-1]
            assert not re.search(r'"(GET|HEAD) /sse/subscribe/\S+ HTTP/1.1" 40[13]', server.output())
            assert watch.page_errors() == []
    finally:
        redis.cleanup()


def test_ticket_url_waits_out_a_busy_server(open_page):
    """``ticketUrl: true`` + ``token`` on a page of another origin: the script buys its tickets itself (a
    CORS POST), and after ``event: busy`` it comes back, with a new one, when the server said to."""
    jwt_value = token("tk-busy")
    with (Gunicorn(env={**ENV, "PUSHSVC_MAX_CONNECTIONS": "1"}) as server,
          app_origin(PAGE.format(jwt=json.dumps(jwt_value), client='"tk-busy"', base=server.base,
                                 options="ticketUrl: true, token: JWT")) as origin):
        holder = RawStream(server.port, f"/sse/subscribe/tk-holder?token={token('tk-holder')}")
        try:
            assert holder.read_until(b"retry:", 5)
            page, watch = open_page(origin + "/app.html")
            page.wait_for_function("got.some(e => e.name === 'busy')")
            expect_title(page, "busy")
        finally:
            holder.close()
        expect_title(page, "open")
        publish(server, to="tk-busy", data="room at last")
        wait_data(page, "room at last")
        urls = subscribe_urls(watch, "tk-busy")
        tickets = [parse_qs(urlsplit(u).query)["ticket"][0] for u in urls]
        assert len(tickets) >= 2 and len(set(tickets)) == len(tickets)
        assert watch.count("/sse/tickets") >= len(tickets)
        assert not [u for u in watch.requests if jwt_value in u or "token=" in u]
        assert watch.page_errors() == []


def test_a_ticket_endpoint_that_says_403_stops_the_page(server, open_page):
    asked = []
    page, watch = open_page("about:blank")

    def refuse(route):
        asked.append(route.request.method)
        route.fulfill(status=403, content_type="application/json", body='{"error": "not you"}')

    page.route(server.url("/sse/tickets"), refuse)
    html = PAGE.format(jwt=json.dumps(token("tk-refused")), client='"tk-refused"', options=TICKET_FUNCTION,
                       base="")
    page.route(server.url("/app.html"), lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(server.url("/app.html"))
    expect_title(page, "refused")
    last = page.evaluate("states[states.length - 1]")
    assert last["status"] == 403 and "403" in last["reason"]
    time.sleep(1.5)  # minDelay is 300 ms: a retry loop would have asked several times by now
    assert asked == ["POST"]
    assert subscribe_urls(watch, "tk-refused") == []
    assert page.evaluate("document.title") == "refused"


def test_a_token_the_server_rejects_stops_the_page(server, open_page):
    """A real 401 from pushsvc's ticket endpoint (a token signed with another secret) is just as final."""
    wrong = token("tk-forged", secret="another-secret-0123456789-abcdefghijklmnop")
    page, watch = open_ticket_page(open_page, server.base, "tk-forged", "ticketUrl: true, token: JWT", wrong)
    expect_title(page, "refused")
    assert page.evaluate("states[states.length - 1].status") == 401
    time.sleep(1.0)
    assert watch.count("/sse/tickets") == 1
    assert subscribe_urls(watch, "tk-forged") == []


def test_a_subscribe_the_token_does_not_allow_is_refused_after_one_probe(server, open_page):
    """The ticket is fine but the stream is not (a group the token lacks): one HEAD, with a ticket of its
    own, tells a 403 from a proxy's hiccup, and the page stops there."""
    page, watch = open_ticket_page(open_page, server.base, "tk-nogroup",
                                   'ticketUrl: true, token: JWT, groups: ["admins"]', token("tk-nogroup"))
    expect_title(page, "refused")
    assert page.evaluate("states[states.length - 1].status") == 403
    time.sleep(1.0)
    urls = subscribe_urls(watch, "tk-nogroup")
    assert len(urls) == 2 and watch.count("/sse/tickets") == 2
    tickets = [parse_qs(urlsplit(u).query)["ticket"][0] for u in urls]
    assert len(set(tickets)) == 2


def test_tabs_share_a_ticketed_stream_and_a_new_holder_buys_its_own(server, open_tabs):
    """Three tabs with ``ticketUrl``: one ticket and one stream for all; when the holder goes, the next
    tab buys a ticket of its own and resumes after the last event any tab saw."""
    html = PAGE.format(jwt=json.dumps(token("tk-shared")), client='"tk-shared"',
                       options="ticketUrl: true, token: JWT", base="")
    tabs = open_tabs("about:blank", 3)
    tabs[0][0].context.route(server.url("/app.html"),
                             lambda route: route.fulfill(body=html, content_type="text/html"))
    pages = [page for page, _ in tabs]
    for page in pages:
        page.goto(server.url("/app.html"))
        expect_title(page, "open")
    assert sorted(p.evaluate("stream.role") for p in pages) == ["follower", "follower", "holder"]
    assert sum(w.count("/sse/tickets") for _, w in tabs) == 1, "one ticket for the three tabs"
    one = publish(server, to="tk-shared", data="one")
    for page in pages:
        wait_data(page, "one")

    gone = next(p for p in pages if p.evaluate("stream.role") == "holder")
    rest = [p for p in pages if p is not gone]
    gone.close()
    assert wait_for(lambda: [p.evaluate("stream.role") for p in rest].count("holder") == 1, 2)
    for page in rest:
        expect_title(page, "open")
    two = publish(server, to="tk-shared", data="two")
    for page in rest:
        wait_data(page, "two")
        assert [e["id"] for e in page.evaluate("got.filter(e => e.name === 'message')")] == [one, two]
    urls = [u for _, w in tabs for u in subscribe_urls(w, "tk-shared")]
    tickets = [parse_qs(urlsplit(u).query)["ticket"][0] for u in urls]
    assert len(tickets) == 2 and len(set(tickets)) == 2, "the new holder bought its own ticket"
    assert f"lastEventId={one}" in urls[1]
    assert sum(w.count("/sse/tickets") for _, w in tabs) == 2
    assert not [u for _, w in tabs for u in w.requests if "token=" in u]
    for _, watch in tabs:
        assert watch.page_errors() == []
