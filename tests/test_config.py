"""Settings: sources, precedence, and one-line errors that name the setting."""

from __future__ import annotations

import pytest

from pushsvc.config import ConfigError, Settings


def test_defaults_match_the_contract():
    s = Settings.load(environ={})
    assert (s.broker_url, s.url_prefix, s.heartbeat_seconds, s.retry_ms) == ("memory://", "/sse", 15.0, 3000)
    assert (s.history_size, s.history_ttl_seconds, s.queue_size) == (10000, 600.0, 1000)
    assert (s.max_connections, s.max_message_bytes, s.cors_origins) == (10000, 65536, ("*",))
    assert s.jwt_secret is None and s.publish_token is None


def test_precedence_keyword_over_app_config_over_environment():
    env = {"PUSHSVC_RETRY_MS": "100", "PUSHSVC_QUEUE_SIZE": "7", "PUSHSVC_HEARTBEAT_SECONDS": "2"}
    s = Settings.load({"RETRY_MS": 200, "queue_size": 8}, environ=env, retry_ms=300)
    assert (s.retry_ms, s.queue_size, s.heartbeat_seconds) == (300, 8, 2.0)


def test_lists_and_optional_values():
    s = Settings.load(environ={"PUSHSVC_CORS_ORIGINS": "https://a.example, https://b.example/",
                               "PUSHSVC_JWT_SECRET": "s3"})
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.jwt_secret == "s3"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PUSHSVC_HEARTBEAT_SECONDS": "soon"}, "PUSHSVC_HEARTBEAT_SECONDS"),
        ({"PUSHSVC_HEARTBEAT_SECONDS": "0"}, "PUSHSVC_HEARTBEAT_SECONDS"),
        ({"PUSHSVC_QUEUE_SIZE": "1.5"}, "PUSHSVC_QUEUE_SIZE"),
        ({"PUSHSVC_MAX_CONNECTIONS": "-1"}, "PUSHSVC_MAX_CONNECTIONS"),
        ({"PUSHSVC_BROKER_URL": "kafka://x"}, "PUSHSVC_BROKER_URL"),
        ({"PUSHSVC_URL_PREFIX": "sse/"}, "PUSHSVC_URL_PREFIX"),
        ({"PUSHSVC_LOG_LEVEL": "LOUD"}, "PUSHSVC_LOG_LEVEL"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_them(env, names):
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=env)
    message = str(info.value)
    assert names in message and "\n" not in message


def test_unknown_keyword_is_refused():
    with pytest.raises(ConfigError, match="PUSHSVC_HEARTBEAT"):
        Settings.load(environ={}, heartbeat=3)
