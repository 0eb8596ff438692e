"""The one guarded HTTP client for calls the server makes on a user's behalf
(Web Push now, outgoing webhooks next): DESIGN.md invariant 10.

A URL someone else chose must not make the server reach its own network: the
host is resolved once, every address it resolves to is checked (loopback,
private, link-local, CGNAT, NAT64, IPv4-mapped, multicast, reserved... are
refused unless CHAT_OUTBOUND_PRIVATE=true) and the connection goes to exactly
those addresses (a resolver that answers only the pinned ones), so a second
DNS answer cannot swap in another address; TLS still verifies the URL's host
name (SNI and certificate). No redirects, a total timeout, a bounded response
read and a bounded number of calls in flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from . import keys
from .observability import Metrics

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Where a user-chosen URL may not lead (on top of whatever `is_global` denies).
REFUSED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # and 255.255.255.255, the broadcast address
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),  # deprecated ::a.b.c.d
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "NAT64"),
    ("100::/64", "discard"),
    ("2001::/23", "IETF protocol assignments"),  # Teredo (2001::/32) among them
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_REFUSED = tuple((ipaddress.ip_network(net), why) for net, why in REFUSED_NETWORKS)
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")


class OutboundRefused(Exception):
    """The URL may not be called; `reason` is human text for a 400 naming the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundError(Exception):
    """The call failed; `cause` is one of timeout, connect, tls, too_large, http."""

    CAUSES = frozenset({"timeout", "connect", "tls", "too_large", "http"})

    def __init__(self, cause: str, detail: str = "") -> None:
        assert cause in self.CAUSES, cause
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]


def address_refusal(address: IPAddress) -> str | None:
    """Why a connection to `address` is refused without CHAT_OUTBOUND_PRIVATE, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(address.compressed.split("%")[0])
        if address in _MAPPED:  # ::ffff:a.b.c.d reaches a.b.c.d
            embedded = address_refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return f"IPv4-mapped {embedded}" if embedded else None
        if address in _SIXTOFOUR and address.sixtofour is not None:
            embedded = address_refusal(address.sixtofour)
            if embedded:
                return f"6to4 {embedded}"
    for network, why in _REFUSED:
        if address.version == network.version and address in network:
            return why
    if not address.is_global or address.is_multicast or address.is_reserved:
        return "not a public address"
    return None


# The addresses the current call resolved and checked, for the connector's resolver.
_PINNED: contextvars.ContextVar[tuple[str, list[ResolveResult]] | None] = contextvars.ContextVar(
    "outbound_pinned", default=None
)


class _PinnedResolver(AbstractResolver):
    """Answers only what the current call pinned for its host: no second lookup."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pinned = _PINNED.get()
        if pinned is None or pinned[0] != host:
            raise OSError(f"{host} was not resolved by the outbound check")
        return [{**result, "port": port or result["port"]} for result in pinned[1]]

    async def close(self) -> None:
        pass


class Outbound:
    def __init__(
        self,
        allow_private: bool,
        metrics: Metrics | None = None,
        *,
        timeout: float = 10.0,
        max_concurrency: int = 32,
        max_response_bytes: int = 65536,
    ) -> None:
        self.allow_private = allow_private
        self.metrics = metrics
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._session: aiohttp.ClientSession | None = None

    async def check(self, url: str, *, https_only: bool) -> None:
        """Refuses (OutboundRefused) a URL that may not be called, resolving its host now."""
        target = self._parse(url, https_only)
        try:
            async with asyncio.timeout(self.timeout):
                await self._resolve(target)
        except (OSError, TimeoutError, UnicodeError):  # UnicodeError: a label too long, empty
            raise OutboundRefused(f"{target.host} does not resolve") from None

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, https_only: bool
    ) -> OutboundResponse:
        """POSTs `body`; any HTTP status is a response (redirects are not followed).

        Raises OutboundRefused for a URL that may not be called and
        OutboundError when the call fails.
        """
        target = self._parse(url, https_only)
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    try:
                        pinned = await self._resolve(target)
                    except (OSError, UnicodeError) as exc:
                        raise OutboundError("connect", f"{target.host} does not resolve") from exc
                    token = _PINNED.set((target.raw_host or "", pinned))
                    try:
                        response = await self._send(target, body, headers)
                    finally:
                        _PINNED.reset(token)
            except TimeoutError:
                error = OutboundError("timeout", f"no answer within {self.timeout} s")
                self._count(error.cause)
                raise error from None
            except OutboundError as exc:
                self._count(exc.cause)
                raise
            except OutboundRefused:
                self._count("refused")
                raise
        self._count("answered")
        return response

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the steps of a call --------------------------------------------------------

    def _parse(self, url: str, https_only: bool) -> URL:
        try:
            target = URL(url)
        except (ValueError, TypeError):
            raise OutboundRefused("is not a URL") from None
        schemes = {"https", "http"} if not https_only or self.allow_private else {"https"}
        if target.scheme not in schemes:
            raise OutboundRefused(
                "must be an https URL" if https_only else "must be an http(s) URL"
            )
        if not target.raw_host:
            raise OutboundRefused("has no host")
        if target.raw_user is not None or target.raw_password is not None:
            raise OutboundRefused("may not carry a user name or password")
        return target

    async def _resolve(self, target: URL) -> list[ResolveResult]:
        """The host's addresses, every one checked (OutboundRefused if any is refused)."""
        host = target.raw_host or ""
        port = target.port or (443 if target.scheme == "https" else 80)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"{host} has no address")
        results: list[ResolveResult] = []
        for family, _, proto, _, sockaddr in infos:
            text = str(sockaddr[0])
            if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
                text = f"{text}%{sockaddr[3]}"
            address = ipaddress.ip_address(text)
            refusal = None if self.allow_private else address_refusal(address)
            if refusal is not None:
                if address.compressed == host:
                    raise OutboundRefused(f"{address} is not allowed ({refusal})")
                raise OutboundRefused(f"{host} resolves to {address}, not allowed ({refusal})")
            results.append(
                {
                    "hostname": host,
                    "host": text,
                    "port": port,
                    "family": family,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        return results

    async def _send(self, target: URL, body: bytes, headers: Mapping[str, str]) -> OutboundResponse:
        session = self._client()
        try:
            async with session.post(
                target, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                declared = response.content_length
                if declared is not None and declared > self.max_response_bytes:
                    raise OutboundError("too_large", f"{declared} bytes announced")
                received = await response.content.read(self.max_response_bytes + 1)
                content = bytearray(received)
                while received and len(content) <= self.max_response_bytes:
                    received = await response.content.read(self.max_response_bytes + 1)
                    content += received
                if len(content) > self.max_response_bytes:
                    raise OutboundError("too_large", f"more than {self.max_response_bytes} bytes")
                return OutboundResponse(response.status, bytes(content), dict(response.headers))
        except TimeoutError as exc:  # aiohttp's own timeout, the same total as ours
            raise OutboundError("timeout", type(exc).__name__) from exc
        except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as exc:
            raise OutboundError("tls", type(exc).__name__) from exc
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise OutboundError("connect", type(exc).__name__) from exc
        except aiohttp.ClientError as exc:  # a malformed answer, a reset while reading...
            raise OutboundError("http", type(exc).__name__) from exc

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=_PinnedResolver(),
                use_dns_cache=False,
                limit=self._max_concurrency,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "chat_server"},
                auto_decompress=False,  # the bound is on the bytes that arrive
                trust_env=False,  # never an HTTP(S)_PROXY from the environment
            )
        return self._session

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.outbound_calls.labels(outcome).inc()


async def outbound_client(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the app's Outbound (`app[keys.OUTBOUND]`), closed on exit."""
    outbound = Outbound(app[keys.CONFIG].outbound_private, app[keys.METRICS])
    app[keys.OUTBOUND] = outbound
    yield
    await outbound.close()
