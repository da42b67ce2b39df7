"""HOST:PORT as both daemons read it from their configs, and the timestamps their APIs show."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from daemonkit.net import HostPort, iso_ms, parse_host_port


def test_host_port_forms():
    assert parse_host_port("127.0.0.1:9101") == HostPort("127.0.0.1", 9101)
    assert parse_host_port("[::1]:9101") == HostPort("::1", 9101)
    assert parse_host_port("[2001:db8::1]:65535") == HostPort("2001:db8::1", 65535)
    assert parse_host_port("localhost:9101") is None
    assert parse_host_port("localhost:9101", names=True) == HostPort("localhost", 9101)
    for bad in ("9101", ":9101", "::1:9101", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x",
                "[::1]", "[localhost]:80", "-bad-.example:80", "127.0.0.1:٩"):
        assert parse_host_port(bad, names=True) is None, bad
    assert str(HostPort("::1", 80)) == "[::1]:80" and str(HostPort("a.example", 80)) == "a.example:80"


def test_iso_ms_is_utc_with_milliseconds():
    moment = datetime(2026, 11, 22, 11, 0, 0, 123999, tzinfo=timezone(timedelta(hours=1)))
    assert iso_ms(moment) == "2026-11-22T10:00:00.123Z"
