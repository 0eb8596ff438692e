"""outbound.py: the address rules, and real calls to a local aiohttp server."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from chat_server.observability import Metrics
from chat_server.outbound import (
    Outbound,
    OutboundError,
    OutboundRefused,
    address_refusal,
)

from .helpers.tls import self_signed_context

REFUSED = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.0.1",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.10",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::10.0.0.1",  # IPv4-compatible
    "::8.8.8.8",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::808:808",  # NAT64, even of a public address
    "64:ff9b:1::1",
    "100::1",
    "2001::1",  # Teredo
    "2001:db8::1",
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%1",
    "fec0::1",
    "ff02::1",
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.1",  # just above
    "172.15.255.255",
    "172.32.0.1",
    "192.169.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_addresses(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_refusals_say_why() -> None:
    assert address_refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert address_refusal(ipaddress.ip_address("100.64.1.1")) == "carrier-grade NAT"
    assert address_refusal(ipaddress.ip_address("::ffff:192.168.0.1")) == "IPv4-mapped private"
    assert address_refusal(ipaddress.ip_address("64:ff9b::1")) == "NAT64"


# --- URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "https_only", "words"),
    [
        ("http://8.8.8.8/push", True, "https"),
        ("ftp://8.8.8.8/", False, "http(s)"),
        ("javascript:alert(1)", False, "http(s)"),
        ("https:///nohost", True, "host"),
        ("https://user:pw@8.8.8.8/", True, "password"),
        ("https://user@8.8.8.8/", True, "user"),
        ("https://127.0.0.1/", True, "loopback"),
        ("https://[::1]:8443/", True, "loopback"),
        ("https://10.1.2.3/", True, "private"),
        ("http://169.254.169.254/latest/meta-data", False, "link-local"),
        ("https://[::ffff:127.0.0.1]/", True, "IPv4-mapped loopback"),
        ("https://localhost/", True, "localhost resolves to"),
        ("http://localhost:8080/hook", False, "localhost resolves to"),
        ("http://127.1/", False, "loopback"),  # a legacy numeric form
        ("http://2130706433/", False, "loopback"),
        ("https://no-such-host.invalid/", True, "does not resolve"),
        ("https://a..b.example/", True, "does not resolve"),  # an empty label
        ("https://" + "x" * 64 + ".example/", True, "does not resolve"),  # a label over 63
    ],
)
async def test_check_refuses(url: str, https_only: bool, words: str) -> None:
    outbound = Outbound(allow_private=False)
    with pytest.raises(OutboundRefused) as refused:
        await outbound.check(url, https_only=https_only)
    assert words in refused.value.reason


async def test_check_accepts_public_https() -> None:
    await Outbound(allow_private=False).check("https://8.8.8.8/push/abc", https_only=True)
    await Outbound(allow_private=False).check("http://8.8.8.8/hook", https_only=False)


async def test_allow_private_accepts_loopback_and_http_for_push() -> None:
    outbound = Outbound(allow_private=True)
    await outbound.check("http://127.0.0.1:9/x", https_only=True)
    await outbound.check("https://localhost/x", https_only=True)
    await outbound.check("http://10.0.0.1/x", https_only=False)
    with pytest.raises(OutboundRefused, match="password"):
        await outbound.check("http://u:p@127.0.0.1/", https_only=False)
    with pytest.raises(OutboundRefused):
        await outbound.check("ftp://127.0.0.1/", https_only=True)


# --- real calls against a local server -------------------------------------------------

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts an aiohttp server on 127.0.0.1 for `routes`; yields its base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: web.RouteTableDef, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_post_reaches_local_server_only_with_allow_private(serve: Serve) -> None:
    received: list[tuple[bytes, str]] = []
    routes = web.RouteTableDef()

    @routes.post("/hook")
    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Test"]))
        return web.json_response({"ok": True}, status=201, headers={"X-Answer": "yes"})

    base = await serve(routes)
    metrics = Metrics()
    private = Outbound(allow_private=True, metrics=metrics)
    try:
        response = await private.post(
            f"{base}/hook", b'{"a": 1}', {"X-Test": "t"}, https_only=False
        )
        assert response.status == 201
        assert response.body == b'{"ok": true}'
        assert response.headers["X-Answer"] == "yes"
        assert received == [(b'{"a": 1}', "t")]
        # The same through the name `localhost` (resolved once, then pinned).
        port = base.rsplit(":", 1)[1]
        response = await private.post(
            f"http://localhost:{port}/hook", b"x", {"X-Test": "l"}, https_only=False
        )
        assert response.status == 201
        assert received[-1] == (b"x", "l")
    finally:
        await private.close()
    assert metrics.outbound_calls.labels("answered")._value.get() == 2

    public_only = Outbound(allow_private=False, metrics=metrics)
    try:
        for url in (f"{base}/hook", f"http://localhost:{port}/hook"):
            with pytest.raises(OutboundRefused, match="loopback"):
                await public_only.post(url, b"x", {"X-Test": "n"}, https_only=False)
    finally:
        await public_only.close()
    assert len(received) == 2
    assert metrics.outbound_calls.labels("refused")._value.get() == 2


async def test_host_is_resolved_once_per_call(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = web.RouteTableDef()

    @routes.post("/")
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=204)

    base = await serve(routes)
    port = base.rsplit(":", 1)[1]
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    original = loop.getaddrinfo

    async def counting(host: str, *args: object, **kwargs: object) -> object:
        lookups.append(host)
        return await original(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    outbound = Outbound(allow_private=True)
    try:
        for _ in range(2):
            response = await outbound.post(f"http://localhost:{port}/", b"", {}, https_only=False)
            assert response.status == 204
    finally:
        await outbound.close()
    assert lookups == ["localhost", "localhost"]


async def test_a_hanging_server_times_out(serve: Serve) -> None:
    routes = web.RouteTableDef()
    release = asyncio.Event()

    @routes.post("/slow")
    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    base = await serve(routes)
    metrics = Metrics()
    outbound = Outbound(allow_private=True, metrics=metrics, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(OutboundError) as failed:
            await outbound.post(f"{base}/slow", b"", {}, https_only=False)
    finally:
        release.set()
        await outbound.close()
    assert failed.value.cause == "timeout"
    assert 0.4 < time.monotonic() - started < 3
    assert metrics.outbound_calls.labels("timeout")._value.get() == 1


async def test_an_oversize_answer_is_cut_off(serve: Serve) -> None:
    routes = web.RouteTableDef()

    @routes.post("/big")
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    @routes.post("/chunked")
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"y" * 1000)
        await response.write_eof()
        return response

    @routes.post("/fits")
    async def fits(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * 1000)

    base = await serve(routes)
    outbound = Outbound(allow_private=True, max_response_bytes=1000)
    try:
        for path in ("/big", "/chunked"):
            with pytest.raises(OutboundError) as failed:
                await outbound.post(f"{base}{path}", b"", {}, https_only=False)
            assert failed.value.cause == "too_large"
        response = await outbound.post(f"{base}/fits", b"", {}, https_only=False)
        assert response.body == b"z" * 1000
    finally:
        await outbound.close()


async def test_redirects_are_not_followed(serve: Serve) -> None:
    routes = web.RouteTableDef()
    followed: list[str] = []

    @routes.post("/moved")
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    @routes.post("/elsewhere")
    async def elsewhere(request: web.Request) -> web.Response:
        followed.append("elsewhere")
        return web.Response()

    base = await serve(routes)
    outbound = Outbound(allow_private=True)
    try:
        response = await outbound.post(f"{base}/moved", b"", {}, https_only=False)
    finally:
        await outbound.close()
    assert response.status == 307
    assert response.headers["Location"] == "/elsewhere"
    assert followed == []


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket closes
    outbound = Outbound(allow_private=True)
    try:
        with pytest.raises(OutboundError) as failed:
            await outbound.post(f"http://127.0.0.1:{port}/", b"", {}, https_only=False)
    finally:
        await outbound.close()
    assert failed.value.cause == "connect"


async def test_an_untrusted_certificate_is_a_tls_error(serve: Serve, tmp_path: Path) -> None:
    """Certificates are verified (here: a self-signed one nobody trusts)."""
    routes = web.RouteTableDef()

    @routes.post("/")
    async def ok(request: web.Request) -> web.Response:
        return web.Response()

    base = await serve(routes, self_signed_context(tmp_path, "localhost"))
    outbound = Outbound(allow_private=True)
    try:
        with pytest.raises(OutboundError) as failed:
            await outbound.post(f"{base}/", b"", {}, https_only=True)
    finally:
        await outbound.close()
    assert failed.value.cause == "tls"


async def test_concurrency_is_bounded(serve: Serve) -> None:
    routes = web.RouteTableDef()
    inside = 0
    most = 0
    gate = asyncio.Event()

    @routes.post("/")
    async def held(request: web.Request) -> web.Response:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside == 2:
            gate.set()
        await asyncio.sleep(0.05)
        inside -= 1
        return web.Response()

    base = await serve(routes)
    outbound = Outbound(allow_private=True, max_concurrency=2)
    try:
        answers = await asyncio.gather(
            *(outbound.post(f"{base}/", b"", {}, https_only=False) for _ in range(6))
        )
    finally:
        await outbound.close()
    assert [a.status for a in answers] == [200] * 6
    assert gate.is_set() and most == 2
