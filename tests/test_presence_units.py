"""The pieces of presence that need no server: unit counting, webhook signing and encoding, the settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import urllib3

from pushsvc.config import ConfigError, Settings
from pushsvc.messages import InvalidInput, check_flag
from pushsvc.stats import Stats
from pushsvc.transitions import Transition, UnitCounts, split_unit, unit, units_of
from pushsvc.webhook import Webhook, encode, sign

from .receiver import Receiver


class Conn:
    def __init__(self, client_id: str, *groups: str):
        self.client_id = client_id
        self.groups = groups


def test_a_stream_counts_for_its_client_and_for_its_client_in_each_group():
    assert units_of(Conn("u1", "a", "b")) == ["u1", "u1 a", "u1 b"]
    assert split_unit(unit("u1", "a")) == ("u1", "a")
    assert split_unit(unit("u1")) == ("u1", None)


def test_unit_counts_give_the_changes_since_the_last_take():
    counts = UnitCounts()
    tab1, tab2 = Conn("u1", "g"), Conn("u1")
    counts.change(tab1, 1)
    counts.change(tab2, 1)
    assert sorted(counts.take()) == [("u1", 2), ("u1 g", 1)]
    assert counts.take() == []
    counts.change(tab2, -1)
    counts.change(tab2, 1)  # a reload between two writes: the count is the same, nothing moves
    assert counts.take() == [("u1", 2)]
    counts.change(tab1, -1)
    counts.change(tab2, -1)
    assert sorted(counts.take()) == [("u1", 0), ("u1 g", 0)]


def test_a_stream_that_came_and_went_between_two_writes_is_still_reported():
    counts = UnitCounts()
    blip = Conn("u2")
    counts.change(blip, 1)
    counts.change(blip, -1)
    assert counts.take() == [("u2", 1), ("u2", 0)]
    assert counts.everything() == []


def test_the_signature_is_the_hmac_sha256_of_the_raw_body():
    body = encode([Transition("1-0", "online", "ü1", 1700000000000)])
    assert json.loads(body) == {"events": [{"id": "1-0", "type": "online", "client": "ü1",
                                            "time": 1700000000000}]}
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body) == f"sha256={expected}"


@pytest.mark.parametrize("config, message", [
    ({"presence_grace_seconds": -1}, "PUSHSVC_PRESENCE_GRACE_SECONDS must be 0 to 3600"),
    ({"presence_grace_seconds": "nan"}, "PUSHSVC_PRESENCE_GRACE_SECONDS must be 0 to 3600"),
    ({"presence_ttl_seconds": 2}, "PUSHSVC_PRESENCE_TTL_SECONDS must be 3 to 30"),
    ({"presence_ttl_seconds": 31}, "PUSHSVC_PRESENCE_TTL_SECONDS must be 3 to 30"),
    ({"webhook_url": "ftp://example.com/x"}, "PUSHSVC_WEBHOOK_URL is 'ftp://example.com/x'"),
    ({"webhook_url": "http://"}, "PUSHSVC_WEBHOOK_URL is 'http://'"),
    ({"webhook_secret": "s"}, "PUSHSVC_WEBHOOK_SECRET is set but PUSHSVC_WEBHOOK_URL is not"),
    ({"webhook_url": "http://h/x", "presence_tracking": False}, "PUSHSVC_WEBHOOK_URL is set but"),
    ({"webhook_retry_seconds": 0}, "PUSHSVC_WEBHOOK_RETRY_SECONDS must be a positive number"),
])
def test_bad_presence_settings_stop_the_start(config, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.load(config, environ={})


def test_presence_settings_from_the_environment():
    settings = Settings.load(environ={"PUSHSVC_PRESENCE_GRACE_SECONDS": "0.5",
                                      "PUSHSVC_WEBHOOK_URL": "https://hooks.example/presence",
                                      "PUSHSVC_WEBHOOK_SECRET": "k", "PUSHSVC_WEBHOOK_RETRY_SECONDS": "60"})
    assert (settings.presence_grace_seconds, settings.webhook_url, settings.webhook_secret,
            settings.webhook_retry_seconds, settings.presence_tracking) == (
        0.5, "https://hooks.example/presence", "k", 60.0, True)
    assert Settings.load(environ={}).presence_grace_seconds == 5.0
    assert Settings.load(environ={}).presence_ttl_seconds == 15.0
    assert Settings.load(environ={"PUSHSVC_PRESENCE_TTL_SECONDS": "4.5"}).presence_ttl_seconds == 4.5


@pytest.mark.parametrize("value, expected", [(None, False), ("1", True), ("true", True), ("0", False),
                                             ("", False), ("off", False)])
def test_the_presence_switch(value, expected):
    assert check_flag(value, field="presence") is expected


def test_a_presence_switch_that_is_neither_is_refused():
    with pytest.raises(InvalidInput, match="presence must be 1 or 0"):
        check_flag("maybe", field="presence")


def test_a_receiver_that_times_out_is_tried_again():
    with Receiver("k", hang_first=1.5) as receiver:
        settings = Settings.load(environ={}, webhook_url=receiver.url, webhook_secret="k",
                                 webhook_retry_seconds=30)
        stats = Stats()
        webhook = Webhook(settings, stats)
        # The real client, with a read timeout shorter than the receiver's first wait (10 s normally).
        webhook.http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=0.3), retries=False)
        webhook.deliver([Transition("7-0", "offline", "late", 1700000000000)])
    assert [e["id"] for e in receiver.events] == ["7-0"]
    assert (stats.webhook_retries, stats.webhook_deliveries, stats.webhook_failures) == (1, 1, 0)


def test_a_batch_is_given_up_after_the_retry_period():
    with Receiver(None) as receiver:
        receiver.down = True
        settings = Settings.load(environ={}, webhook_url=receiver.url, webhook_retry_seconds=1.5)
        stats = Stats()
        started = time.monotonic()
        Webhook(settings, stats).deliver([Transition("8-0", "online", "never", 1700000000000)])
    assert time.monotonic() - started < 5
    assert receiver.failed >= 2 and not receiver.events
    assert (stats.webhook_failures, stats.webhook_deliveries) == (1, 0)
