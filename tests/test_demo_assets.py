"""What the demo page is made of, checked without a browser: it loads nothing from outside pushsvc,
follows the URL prefix, has no inline code (so its Content-Security-Policy can forbid it), and pushsvc.js
is served by the blueprint wherever pushsvc is mounted."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from pushsvc import Push, create_app

ASSET = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["']([^"']+)["']""", re.IGNORECASE)
# What a policy without 'unsafe-inline' refuses: a script element without src, a style element, a style
# attribute, an event handler attribute, a javascript: URL.
INLINE = re.compile(r"""<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:""",
                    re.IGNORECASE)


@pytest.mark.parametrize("prefix", ["/sse", "/push/v1"])
def test_the_page_loads_only_its_own_files_under_the_prefix(prefix):
    client = create_app(broker_url="memory://", url_prefix=prefix).test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = ASSET.findall(html)
    assert f"{prefix}/static/jquery.min.js" in assets and f"{prefix}/static/pushsvc.js" in assets
    for url in assets:
        assert url.startswith((prefix + "/", "data:")), f"{url} would need another server (or internet)"
    assert "//" not in " ".join(a for a in assets if not a.startswith("data:")), "no CDN, no scheme"
    for url in assets:
        if not url.startswith("data:"):
            assert client.get(url).status_code == 200, url
    assert f"{prefix}/static/demo.js" in assets and f"{prefix}/static/demo.css" in assets
    # What the page's script needs from the template comes as data, not as inline script.
    assert f'<body data-pushsvc-url="{prefix}">' in html


def test_the_page_has_a_content_security_policy_and_no_inline_code():
    page = create_app(broker_url="memory://").test_client().get("/")
    policy = page.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"] and directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in policy
    html = page.get_data(as_text=True)
    assert INLINE.findall(html) == []
    assert len(re.findall(r"<script\b", html)) == 3, "jQuery, pushsvc.js, demo.js"


def test_jquery_comes_from_the_xstatic_package():
    client = create_app(broker_url="memory://").test_client()
    script = client.get("/sse/static/jquery.min.js")
    assert script.status_code == 200 and script.mimetype in ("text/javascript", "application/javascript")
    assert script.get_data(as_text=True).startswith("/*! jQuery v3.")
    assert client.get("/sse/static/jquery.min.map").status_code == 200
    assert client.get("/sse/static/jquery.min.css").status_code == 404
    assert client.get("/sse/static/../app.py").status_code == 404


def test_pushsvc_js_is_served_by_the_blueprint_in_any_app():
    app = Flask(__name__)
    Push(app, broker_url="memory://", url_prefix="/events")
    script = app.test_client().get("/events/static/pushsvc.js")
    assert script.status_code == 200 and script.mimetype in ("text/javascript", "application/javascript")
    text = script.get_data(as_text=True)
    # No dependency and no build step: plain browser JavaScript that defines PushSvc by itself.
    assert "root.PushSvc = {" in text and "require(" not in text and "import " not in text
    assert "new root.EventSource(" in text
