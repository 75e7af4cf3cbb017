from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from hookbay.actions.ssrf import DestinationRefused, check_destination, is_public_address


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("93.184.216.34", True),
        ("172.15.255.255", True),
        ("172.32.0.1", True),
        ("100.63.255.255", True),
        ("100.128.0.1", True),
        ("2606:4700:4700::1111", True),
        ("2a00:1450:4001:81a::200e", True),
        ("::ffff:8.8.8.8", True),
        ("2002:0808:0808::1", True),  # 6to4 of a public IPv4
        ("64:ff9b::8.8.8.8", True),  # NAT64 of a public IPv4
        ("[2606:4700:4700::1111]", True),
        # loopback
        ("127.0.0.1", False),
        ("127.255.255.254", False),
        ("::1", False),
        # private
        ("10.0.0.1", False),
        ("10.255.255.255", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("192.168.1.1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        # link-local, cloud metadata
        ("169.254.169.254", False),
        ("169.254.0.1", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fd00:ec2::254", False),  # AWS metadata over IPv6 (ULA)
        # carrier-grade NAT
        ("100.64.0.1", False),
        ("100.127.255.255", False),
        # multicast, unspecified, broadcast, reserved, documentation
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("ff02::1", False),
        ("ff0e::1", False),
        ("0.0.0.0", False),
        ("0.1.2.3", False),
        ("::", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("192.0.2.10", False),
        ("198.51.100.1", False),
        ("203.0.113.1", False),
        ("198.18.0.1", False),
        ("2001:db8::1", False),
        ("100::1", False),
        ("2001::1", False),  # Teredo
        ("fec0::1", False),  # site-local
        # IPv4 embedded in IPv6
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:10.0.0.1", False),
        ("::127.0.0.1", False),  # IPv4-compatible (deprecated)
        ("2002:7f00:0001::1", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::10.0.0.1", False),  # NAT64 of a private IPv4
        ("64:ff9b:1::1", False),  # local-use NAT64
        # not addresses
        ("", False),
        ("localhost", False),
        ("example.com", False),
        ("127.1", False),
        ("999.1.1.1", False),
    ],
)
def test_is_public_address(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


def _info(ip: str, port: int) -> tuple[Any, ...]:
    if ":" in ip:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))


@dataclass
class FakeDNS:
    table: dict[str, list[str]]
    calls: list[tuple[str, int]] = field(default_factory=list)

    async def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [_info(ip, port) for ip in self.table[host]]


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """A fake resolver on the running loop; unknown hosts fail like NXDOMAIN."""
    fake = FakeDNS(
        {
            "localhost": ["127.0.0.1", "::1"],
            "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
            "mixed.example": ["93.184.216.34", "10.0.0.5"],
            "metadata.example": ["169.254.169.254"],
            "v6private.example": ["2606:2800:220:1:248:1893:25c8:1946", "fd00::1"],
            "127.1": ["127.0.0.1"],
            "2130706433": ["127.0.0.1"],
        }
    )
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.mark.parametrize(
    "url",
    [
        "http://public.example/hook",
        "https://public.example:8443/hook?x=1",
        "HTTPS://PUBLIC.EXAMPLE/",
        "http://93.184.216.34/",
        "http://[2606:4700:4700::1111]/",
    ],
)
async def test_public_destinations_pass(dns: FakeDNS, url: str) -> None:
    await check_destination(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://localhost/", "resolves to 127.0.0.1"),
        ("http://localhost:8080/admin", "not a public address"),
        ("http://127.0.0.1/", "127.0.0.1 is not a public address"),
        ("http://127.0.0.1:9000/", "not a public address"),
        ("http://[::1]/", "::1 is not a public address"),
        ("http://[::ffff:127.0.0.1]/", "not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address"),
        ("http://metadata.example/", "resolves to 169.254.169.254"),
        ("http://10.1.2.3/", "not a public address"),
        ("http://192.168.0.10/", "not a public address"),
        ("http://100.64.1.1/", "not a public address"),
        ("http://[fe80::1]/", "not a public address"),
        ("http://0.0.0.0/", "not a public address"),
        ("http://mixed.example/", "resolves to 10.0.0.5"),  # any bad address refuses
        ("http://v6private.example/", "resolves to fd00::1"),
        ("http://127.1/", "resolves to 127.0.0.1"),
        ("http://2130706433/", "resolves to 127.0.0.1"),
    ],
)
async def test_private_destinations_refused(dns: FakeDNS, url: str, fragment: str) -> None:
    with pytest.raises(DestinationRefused) as info:
        await check_destination(url, allow_private=False)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/",
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://mixed.example/",
        "http://unresolvable.invalid/",  # not resolved at all: the HTTP client will report it
    ],
)
async def test_allow_private_permits(dns: FakeDNS, url: str) -> None:
    await check_destination(url, allow_private=True)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://public.example/", "scheme must be http or https, not ftp"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://public.example/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("public.example/hook", "scheme"),
        ("http://user:secret@public.example/", "credentials"),
        ("http://user@public.example/", "credentials"),
        ("http:///no-host", "no host"),
        ("http://[::1/", "invalid URL"),
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
async def test_bad_urls_refused_even_when_private_allowed(
    dns: FakeDNS, url: str, fragment: str, allow_private: bool
) -> None:
    with pytest.raises(DestinationRefused, match=fragment):
        await check_destination(url, allow_private=allow_private)


async def test_dns_failure_is_refused_clearly(dns: FakeDNS) -> None:
    with pytest.raises(
        DestinationRefused, match=r"cannot resolve host 'nowhere\.invalid': Name or service not known"
    ):
        await check_destination("https://nowhere.invalid/hook", allow_private=False)


async def test_resolver_uses_default_ports(dns: FakeDNS) -> None:
    await check_destination("http://public.example/", allow_private=False)
    await check_destination("https://public.example/", allow_private=False)
    await check_destination("https://public.example:8443/", allow_private=False)
    assert dns.calls == [("public.example", 80), ("public.example", 443), ("public.example", 8443)]


async def test_resolver_timeout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hang(*args: Any, **kwargs: Any) -> list[Any]:
        await asyncio.sleep(10)
        return []

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", hang)
    with pytest.raises(DestinationRefused, match="timed out"):
        await check_destination("http://slow.example/", allow_private=False, resolve_timeout=0.05)


async def test_empty_resolution_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def empty(*args: Any, **kwargs: Any) -> list[Any]:
        return []

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", empty)
    with pytest.raises(DestinationRefused, match="no addresses"):
        await check_destination("http://empty.example/", allow_private=False)


# --- issue #19: what the mutation run found untested ----------------------------------------------


@pytest.mark.parametrize(("ip", "public"), [
    ("[8.8.8.8", False),  # half a bracket pair is not an address
    ("8.8.8.8]", False),
    ("[8.8.8.81", False),  # cutting both ends of a half pair would leave a public address
    ("18.8.8.8]", False),
    ("[2606:4700::1:2]", True),  # the whole bracketed address, its last digit included
    ("[2606:4700::1:2]]", False),
])
def test_brackets_are_stripped_only_as_a_pair(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


async def test_the_real_resolver_asks_for_stream_sockets_only() -> None:
    """One entry per address, not one per socket type (the guard checks every entry it gets)."""
    from hookbay.actions import ssrf

    infos = await ssrf.getaddrinfo("127.0.0.1", 80)
    assert infos and {i[1] for i in infos} == {socket.SOCK_STREAM}


@pytest.mark.parametrize(("url", "message"), [
    ("//public.example/hook", "URL scheme must be http or https, not (none)"),
    ("http://user:pw@public.example/", "URL must not contain credentials; configure authentication separately"),
    ("http:///no-host", "URL has no host"),
    ("http://10.1.2.3/", "10.1.2.3 is not a public address (private destinations are not allowed)"),
    ("http://mixed.example/", "host 'mixed.example' resolves to 10.0.0.5, which is not a public address "
                              "(private destinations are not allowed)"),
])
async def test_refusals_say_exactly_why(dns: FakeDNS, url: str, message: str) -> None:
    """The message is the delivery's last_error, what the operator reads to fix the action."""
    with pytest.raises(DestinationRefused) as e:
        await check_destination(url, allow_private=False)
    assert str(e.value) == message


async def test_a_host_name_that_cannot_be_encoded_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    async def bad_idna(*args: Any, **kwargs: Any) -> list[Any]:
        raise UnicodeError("label too long")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", bad_idna)
    with pytest.raises(DestinationRefused) as e:
        await check_destination("http://long.example/", allow_private=False)
    assert str(e.value) == "cannot resolve host 'long.example': label too long"


async def test_resolving_gives_up_after_10_seconds_by_default(dns: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> None:
    from hookbay.actions import ssrf

    seen: list[float] = []
    real = asyncio.timeout

    def spy(delay: float):  # type: ignore[no-untyped-def]
        seen.append(delay)
        return real(delay)

    monkeypatch.setattr(ssrf.asyncio, "timeout", spy)
    await check_destination("http://public.example/", allow_private=False)
    assert seen == [10.0]


# --- issue #19: the connected address (check_peer), which the mutation run found untested --------


class _Stream:
    def __init__(self, addr: tuple[str, int] | None) -> None:
        self.addr = addr
        self.asked: list[str] = []

    def get_extra_info(self, name: str) -> Any:
        self.asked.append(name)
        return self.addr


def _answer(addr: tuple[str, int] | None) -> tuple[Any, _Stream]:
    import httpx

    stream = _Stream(addr)
    return httpx.Response(200, extensions={"network_stream": stream}), stream


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("no_proxy")
@pytest.mark.parametrize("addr", [("10.0.0.5", 443), ("127.0.0.1", 80), ("::1", 443), ("169.254.169.254", 80)])
def test_an_answer_from_a_private_address_is_refused_and_names_it(addr: tuple[str, int]) -> None:
    from hookbay.actions.ssrf import check_peer

    r, stream = _answer(addr)
    with pytest.raises(DestinationRefused) as e:
        check_peer(r, "https://hooks.example.com/x", allow_private=False)
    assert str(e.value) == (f"connected to {addr[0]}, which is not a public address; the answer was discarded")
    assert stream.asked == ["server_addr"]
    check_peer(r, "https://hooks.example.com/x", allow_private=True)  # the admin's own network


@pytest.mark.usefixtures("no_proxy")
def test_an_answer_from_a_public_address_or_without_one_passes() -> None:
    from hookbay.actions.ssrf import check_peer

    check_peer(_answer(("93.184.216.34", 443))[0], "https://hooks.example.com/x", allow_private=False)
    check_peer(_answer(None)[0], "https://hooks.example.com/x", allow_private=False)
    import httpx

    check_peer(httpx.Response(200), "https://hooks.example.com/x", allow_private=False)  # no stream at all


def test_behind_a_proxy_the_connected_address_is_the_proxys(monkeypatch: pytest.MonkeyPatch) -> None:
    from hookbay.actions.ssrf import check_peer

    monkeypatch.setenv("https_proxy", "http://10.0.0.9:3128")
    monkeypatch.setenv("no_proxy", "internal.example.com")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    check_peer(_answer(("10.0.0.9", 3128))[0], "https://hooks.example.com/x", allow_private=False)
    with pytest.raises(DestinationRefused):  # a host the proxy is bypassed for is checked
        check_peer(_answer(("10.0.0.5", 443))[0], "https://internal.example.com/x", allow_private=False)
    with pytest.raises(DestinationRefused):  # a proxy for another scheme does not count
        check_peer(_answer(("10.0.0.5", 80))[0], "http://hooks.example.com/x", allow_private=False)
