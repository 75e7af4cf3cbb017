from __future__ import annotations

import pytest

from hookbay.ingest.ratelimit import TokenBucket
from hookbay.netaddr import client_address, in_networks, parse_networks

TRUSTED = parse_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])


def h(name: str, value: str) -> tuple[bytes, bytes]:
    return (name.encode(), value.encode())


@pytest.mark.parametrize(
    ("peer", "headers", "trusted", "want"),
    [
        ("203.0.113.5", [h("x-forwarded-for", "10.9.9.9")], TRUSTED, "203.0.113.5"),  # untrusted peer
        ("127.0.0.1", [h("x-forwarded-for", "198.51.100.7")], (), "127.0.0.1"),  # no proxies configured
        ("127.0.0.1", [h("x-forwarded-for", "198.51.100.7")], TRUSTED, "198.51.100.7"),
        ("127.0.0.1", [h("x-forwarded-for", "198.51.100.7, 10.1.1.1")], TRUSTED, "198.51.100.7"),
        ("127.0.0.1", [h("x-forwarded-for", "10.2.2.2, 198.51.100.7")], TRUSTED, "198.51.100.7"),
        ("127.0.0.1", [h("forwarded", 'for="[2001:db8::9]:443";proto=https')], TRUSTED, "2001:db8::9"),
        ("127.0.0.1", [h("forwarded", "for=198.51.100.8:1234, for=10.0.0.3")], TRUSTED, "198.51.100.8"),
        ("127.0.0.1", [h("x-forwarded-for", "not-an-ip")], TRUSTED, "127.0.0.1"),
        ("::ffff:127.0.0.1", [h("x-forwarded-for", "192.0.2.4")], TRUSTED, "192.0.2.4"),
        ("fd00::1", [h("x-forwarded-for", "2001:db8::1")], TRUSTED, "2001:db8::1"),
        ("127.0.0.1", [], TRUSTED, "127.0.0.1"),
    ],
)
def test_client_address(peer: str, headers: list[tuple[bytes, bytes]], trusted: tuple, want: str) -> None:
    assert client_address(peer, headers, trusted) == want


def test_in_networks_v4_v6() -> None:
    nets = parse_networks(["192.0.2.0/24", "2001:db8::/32"])
    assert in_networks("192.0.2.200", nets)
    assert not in_networks("192.0.3.1", nets)
    assert in_networks("2001:db8:1::5", nets)
    assert not in_networks("2001:db9::5", nets)
    assert not in_networks("garbage", nets)
    assert not in_networks(None, nets)


def test_token_bucket() -> None:
    b = TokenBucket(rate=2.0, burst=2.0, updated=0.0)
    assert b.take(0.0) == 0 and b.take(0.0) == 0
    wait = b.take(0.0)
    assert wait == pytest.approx(0.5)
    assert b.take(0.5) == 0
    assert b.take(0.5) > 0
    assert b.take(10.0) == 0  # refills only up to the burst
    assert b.take(10.0) == 0
    assert b.take(10.0) > 0
