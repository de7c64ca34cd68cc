"""The SSRF guard of webhook targets: which URLs and addresses ingest may call.

Only http(s), and never an address that is private, loopback, link-local (cloud metadata),
multicast, reserved or unspecified (Python's `ipaddress` classification, after the IANA special
registries), unless `WEBHOOK_ALLOWED_HOSTS` names the host, the address or its network. A target
is checked when a request names it and again at every attempt after DNS resolution (`pin`): the
call then goes to the address that was checked, so DNS cannot rebind between check and call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from events.models import WebhookTarget
from events.settings import Settings
from functions.ingest.webhooks import signing
from functions.ingest.webhooks.errors import WebhookRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
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


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a webhook may not reach this address, or None when it is a public one."""
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address wrapped in IPv6 is judged as itself.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and (reason := forbidden_reason(embedded)):
            return reason
    for attribute, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, attribute):
            return label
    if not address.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT)
        return "not globally routable"
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
    scheme: str
    host: str
    port: int


def parse_endpoint(url: str) -> Endpoint:
    """The scheme, host and port of a webhook URL; WebhookRefused unless it is http(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise WebhookRefused("webhook_invalid", f"the webhook URL is not valid: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(
            "webhook_scheme", f"webhook URLs must be http or https, not {scheme or 'schemeless'}"
        )
    if not parts.hostname:
        raise WebhookRefused("webhook_invalid", "the webhook URL has no host")
    if _literal(parts.hostname) is None:
        try:  # what the resolver will be asked: a name IDNA cannot encode is no host at all
            parts.hostname.encode("idna")
        except UnicodeError:
            raise WebhookRefused("webhook_invalid", f"{parts.hostname!r} is not a valid host name") from None
    return Endpoint(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


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


@dataclass(frozen=True)
class Pinned:
    """A call aimed at a checked address: the URL with that address, the headers to send (the
    target's static ones, without any of ours, and Host) and httpx's `sni_hostname` extension."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, Any]


class WebhookGuard:
    """Checks webhook targets against the allowlist; refuses every target while there is no
    signing secret (an unsigned call is never made)."""

    def __init__(self, allowlist: Allowlist, secret: str | None) -> None:
        self.allowlist = allowlist
        self.secret = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookGuard:
        """From `WEBHOOK_ALLOWED_HOSTS` and `WEBHOOK_SECRET`."""
        return cls(Allowlist.parse(settings.webhook_allowed_hosts), settings.webhook_secret)

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
        """`check` without blocking the event loop."""
        endpoint = self._precheck(target)
        if endpoint is None:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM
            )
        except OSError:
            return
        screen(endpoint.host, _addresses(infos), self.allowlist)

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
        no address."""
        endpoint = parse_endpoint(target.url)
        literal = _literal(endpoint.host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM
            )
            addresses = _addresses(infos)
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
