"""The SSRF guard of webhook targets: which URLs and addresses ingest may call.

Only http(s) URLs with no whitespace or control characters and a host that is an IP literal or a
valid IDNA2008 name (what httpx, which makes the call, can encode); and never an address in
KlipNote's own table of forbidden ranges (`forbidden_reason`), unless `WEBHOOK_ALLOWED_HOSTS` names
the host, the address or its network. The table is ours rather than the interpreter's
`ipaddress` flags, which change between Python releases (3.11.7 finds 192.0.0.192 global). A
target is checked when a request names it and again at every attempt after DNS resolution
(`pin`): the call then goes to the address that was checked, so DNS cannot rebind between check
and call. Resolution runs on the guard's own threads (a black-holed resolver never starves the
event loop's default executor, which storage calls share) and its caller bounds it in time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import idna

from events.models import WebhookTarget
from events.settings import Settings
from functions.ingest.webhooks import signing
from functions.ingest.webhooks.errors import WebhookRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host name and port to the addresses they resolve to (OSError when there are none).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(network), label) for network, label in rows)


# IANA IPv4 Special-Purpose Address Registry
# (https://www.iana.org/assignments/iana-ipv4-special-registry/), every block not globally
# reachable or not a unicast destination, plus multicast and the reserved class E from the IPv4
# Address Space Registry (https://www.iana.org/assignments/ipv4-address-space/).
_FORBIDDEN_V4 = _table(
    ("0.0.0.0/8", "'this network' (RFC 791)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space, carrier-grade NAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation (RFC 5737)"),
    ("192.88.99.0/24", "the deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (RFC 5737)"),
    ("203.0.113.0/24", "documentation (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("255.255.255.255/32", "limited broadcast (RFC 919)"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
)
# IANA IPv6 Special-Purpose Address Registry
# (https://www.iana.org/assignments/iana-ipv6-special-registry/). The IPv4-mapped
# (::ffff:0:0/96), NAT64 (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16, RFC 3056) forms are judged
# by the IPv4 address they carry, first; then everything outside 2000::/3, the only space IANA
# allocates for global unicast (https://www.iana.org/assignments/ipv6-address-space/), is refused.
_FORBIDDEN_V6 = _table(
    ("::/128", "unspecified (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2001::/23", "IETF protocol assignments, Teredo included (RFC 2928, RFC 4380)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fc00::/7", "unique local, private (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("ff00::/8", "multicast (RFC 4291)"),
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Headers a target's static headers may not set: ours (signature, framing) win.
_RESERVED_HEADERS = {
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
}
# Whitespace and control characters: urlsplit silently drops tabs and newlines (WHATWG), so such
# a URL would name another host than the one checked; httpx refuses them at every attempt.
_UNSAFE_CHARACTERS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
# Threads that resolve webhook hosts, per guard (a hung getaddrinfo cannot be cancelled: it holds
# its thread until the system resolver gives up).
_RESOLVER_THREADS = 16


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a webhook may not reach this address (a label naming the range and its RFC), or None
    when it is a public one. Decided by the tables above, never by the interpreter's flags."""
    plain = ipaddress.ip_address(str(address).split("%", 1)[0])  # without an IPv6 scope
    if plain in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(plain, ipaddress.IPv6Address):
        # An IPv4 address carried in IPv6 is judged as itself (reaching it reaches that address).
        embedded = plain.ipv4_mapped or plain.sixtofour
        if embedded is None and plain in _NAT64:
            embedded = ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden_reason(embedded)
        table = _FORBIDDEN_V6
    else:
        table = _FORBIDDEN_V4
    for network, label in table:
        if plain in network:
            return label
    if isinstance(plain, ipaddress.IPv6Address) and plain not in _GLOBAL_UNICAST_V6:
        return "not global unicast (outside 2000::/3)"
    return None


@dataclass(frozen=True)
class Allowlist:
    """`WEBHOOK_ALLOWED_HOSTS`: host names, addresses and networks that may be private."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        names, networks = set(), []
        for entry in entries:
            text = entry.strip().strip("[]")
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                names.add(_normal_host(text))
        return cls(frozenset(names), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return _normal_host(host) in self.names

    def allows_address(self, address: IPAddress) -> bool:
        plain = ipaddress.ip_address(str(address).split("%", 1)[0])  # without an IPv6 scope
        return any(plain in network for network in self.networks)


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True)
class Endpoint:
    """Where a webhook URL points: its scheme, its host as sent on the wire (an IP literal, or
    the IDNA2008 A-label form of a name) and its port."""

    scheme: str
    host: str
    port: int


def parse_endpoint(url: str) -> Endpoint:
    """The scheme, host and port of a webhook URL. Raises WebhookRefused `webhook_scheme` unless
    it is http(s), `webhook_invalid` for whitespace or control characters anywhere, no host, a
    bad port, or a host name that is not valid IDNA2008 (the `idna` package, as httpx encodes it).
    Messages name the host at most: never the path, query or credentials."""
    if _UNSAFE_CHARACTERS.search(url):
        raise WebhookRefused("webhook_invalid", "the webhook URL holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookRefused("webhook_invalid", "the webhook URL is not valid (its host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(
            "webhook_scheme", f"webhook URLs must be http or https, not {scheme or 'schemeless'}"
        )
    hostname = parts.hostname
    if not hostname:
        raise WebhookRefused("webhook_invalid", "the webhook URL has no host")
    host = hostname
    if _literal(hostname) is None:
        try:  # what httpx will send: IDNA2008 (UTS #46 would map more than httpx does)
            host = idna.encode(hostname.lower()).decode("ascii")
        except idna.IDNAError:
            raise WebhookRefused(
                "webhook_invalid", f"{hostname!r} is not a valid host name (IDNA2008)"
            ) from None
    try:
        httpx.URL(url)  # the URL the attempts will parse: refused now rather than at each attempt
    except httpx.InvalidURL:
        raise WebhookRefused("webhook_invalid", "the webhook URL is not valid") from None
    return Endpoint(scheme, host, port or (443 if scheme == "https" else 80))


def _literal(host: str) -> IPAddress | None:
    """The address a host stands for without DNS: an IP literal, or loopback for `localhost`
    and its subdomains (RFC 6761, whatever the resolver says)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        name = _normal_host(host)
        if name == "localhost" or name.endswith(".localhost"):
            return ipaddress.ip_address("127.0.0.1")
        return None


def screen(host: str, addresses: Iterable[IPAddress], allow: Allowlist) -> None:
    """Refuse (WebhookRefused `webhook_forbidden`) when any address `host` resolves to is one a
    webhook must not reach."""
    if allow.allows_host(host):
        return
    for address in addresses:
        reason = forbidden_reason(address)
        if reason and not allow.allows_address(address):
            raise WebhookRefused(
                "webhook_forbidden",
                f"webhook host {host} resolves to {address}, {reason}; such addresses are refused "
                "unless WEBHOOK_ALLOWED_HOSTS lists them",
            )


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3] and "%" not in text:
            text = f"{text}%{sockaddr[3]}"
        address = ipaddress.ip_address(text)
        if address not in found:
            found.append(address)
    return found


def system_resolver(threads: int = _RESOLVER_THREADS) -> Resolver:
    """The system resolver (getaddrinfo) on `threads` threads of its own."""
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook-dns")

    async def resolve(host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().run_in_executor(
            executor, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        )
        return _addresses(infos)

    return resolve


@dataclass(frozen=True)
class Pinned:
    """A call aimed at a checked address: the URL with that address, the headers to send (the
    target's static ones, without any of ours, and Host) and httpx's `sni_hostname` extension."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, Any]


class WebhookGuard:
    """Checks webhook targets against the allowlist; refuses every target while there is no
    signing secret (an unsigned call is never made). `resolve` turns a host into addresses (the
    system resolver on threads of its own by default; tests inject a slow or failing one);
    `resolve_timeout_s` bounds a resolution at submission (seconds)."""

    def __init__(
        self,
        allowlist: Allowlist,
        secret: str | None,
        resolve: Resolver | None = None,
        resolve_timeout_s: float = 15.0,
    ) -> None:
        self.allowlist = allowlist
        self.secret = secret
        self.resolve = resolve or system_resolver()
        self.resolve_timeout_s = resolve_timeout_s

    @classmethod
    def from_settings(cls, settings: Settings, resolve: Resolver | None = None) -> WebhookGuard:
        """From `WEBHOOK_ALLOWED_HOSTS`, `WEBHOOK_SECRET` and `WEBHOOK_TIMEOUT_S` (which bounds a
        resolution at submission)."""
        return cls(
            Allowlist.parse(settings.webhook_allowed_hosts),
            settings.webhook_secret,
            resolve,
            settings.webhook_timeout_s,
        )

    def check(self, target: WebhookTarget) -> None:
        """Refuse a target at submission (raises WebhookRefused). Resolves the host with the
        system resolver (blocking): from async code use `check_async`. A host that does not
        resolve now is accepted; every delivery attempt checks again."""
        endpoint = self._precheck(target)
        if endpoint is None:
            return
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except OSError:
            return
        screen(endpoint.host, _addresses(infos), self.allowlist)

    async def check_async(self, target: WebhookTarget) -> None:
        """`check` without blocking the event loop, the resolution bounded by `resolve_timeout_s`
        (a host that does not resolve in time is accepted, as one that does not resolve)."""
        endpoint = self._precheck(target)
        if endpoint is None:
            return
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                addresses = await self.resolve(endpoint.host, endpoint.port)
        except (OSError, TimeoutError):
            return
        screen(endpoint.host, addresses, self.allowlist)

    def _precheck(self, target: WebhookTarget) -> Endpoint | None:
        """What needs no DNS; the endpoint when its host name still needs resolving."""
        signing.signer(self.secret)
        endpoint = parse_endpoint(target.url)
        literal = _literal(endpoint.host)
        if literal is not None:
            screen(endpoint.host, [literal], self.allowlist)
            return None
        return None if self.allowlist.allows_host(endpoint.host) else endpoint

    async def pin(self, target: WebhookTarget) -> Pinned:
        """Resolve the host, refuse forbidden addresses (WebhookRefused), and aim the call at a
        checked address (Host header and TLS server name stay the URL's). OSError when DNS gives
        no address. Not bounded in time here: the caller's deadline covers it."""
        endpoint = parse_endpoint(target.url)
        literal = _literal(endpoint.host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            addresses = await self.resolve(endpoint.host, endpoint.port)
            if not addresses:
                raise OSError("no address")
        screen(endpoint.host, addresses, self.allowlist)
        url = httpx.URL(target.url)
        default_port = 443 if endpoint.scheme == "https" else 80
        host_header = url.raw_host.decode("ascii")
        if ":" in host_header:
            host_header = f"[{host_header}]"
        if endpoint.port != default_port:
            host_header += f":{endpoint.port}"
        extensions: dict[str, Any] = {}
        if literal is None or _normal_host(endpoint.host) != str(literal):
            url = url.copy_with(host=str(addresses[0]).split("%", 1)[0])
            if endpoint.scheme == "https":
                extensions["sni_hostname"] = endpoint.host
        headers = {
            name: value for name, value in target.headers.items() if name.lower() not in _RESERVED_HEADERS
        }
        headers["Host"] = host_header
        return Pinned(url, headers, extensions)
