"""Where a callback may go: the allow-list, checked by parsing, never by string prefix (no request forgery).

An allow-list entry is an origin with an optional path prefix:

    https://hooks.example.org/fhir/     that origin (default port only), paths under /fhir/
    http://127.0.0.1:*/                 any port of 127.0.0.1

A callback URL passes when its scheme, host and port equal an entry's and its
path starts with the entry's path segment by segment. Refused outright:
userinfo, fragments, whitespace or control characters, backslashes, dot
segments (also percent-encoded), encoded slashes, and host names that look like
a number but are not a canonical IP literal (`127.1`, `2130706433`). A host
name passes only when every address it resolves to is allowed; loopback,
private, link-local, reserved and cloud-metadata addresses are allowed only
when an entry names that address literally. Delivery connects to the address
that was checked (no DNS rebinding between check and connect).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
DEFAULT_PORTS = {"http": 80, "https": 443}
METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class CallbackRefused(ValueError):
    """The callback URL (or an allow-list entry) is not acceptable; the message says why."""


@dataclass(frozen=True)
class AllowEntry:
    scheme: str
    host: str
    port: int | None  # None: any port (`:*`)
    path: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        any_port = False
        scheme, sep, rest = text.partition("://")
        netloc, slash, path = rest.partition("/")
        if netloc.endswith(":*"):
            netloc, any_port = netloc[:-2], True
        try:
            parsed = _parsed(f"{scheme}://{netloc}{slash}{path}")
        except CallbackRefused as exc:
            raise CallbackRefused(f"allow-list entry {text!r}: {exc}") from exc
        if not sep or "?" in parsed.path_and_query:
            raise CallbackRefused(
                f"allow-list entry {text!r} must be an origin with an optional path, e.g. https://host/hooks/"
            )
        return cls(parsed.scheme, parsed.host, None if any_port else parsed.port, parsed.segments)

    def admits(self, url: ParsedURL) -> bool:
        return (
            self.scheme == url.scheme
            and self.host == url.host
            and self.port in (None, url.port)
            and url.segments[: len(self.path)] == self.path
        )

    @property
    def literal(self) -> IPAddress | None:
        return _ip(self.host)


@dataclass(frozen=True)
class ParsedURL:
    scheme: str
    host: str  # lower case; an IP literal in its canonical form
    port: int
    segments: tuple[str, ...]
    path_and_query: str


@dataclass(frozen=True)
class CallbackTarget:
    """A checked callback: post to `connect_url` (the checked address) with `host_header` (and `sni` for TLS)."""

    url: str
    connect_url: str
    host_header: str
    sni: str | None


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _parsed(url: str) -> ParsedURL:
    if len(url) > 2048 or _FORBIDDEN_CHARS.search(url) or not url.isascii():
        raise CallbackRefused("it contains whitespace, control characters, backslashes or non-ASCII characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise CallbackRefused("only http and https callbacks are allowed")
    if "@" in parts.netloc:
        raise CallbackRefused("user information (user@host) is not allowed in a callback URL")
    if parts.fragment or "#" in url:
        raise CallbackRefused("a callback URL has no fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackRefused("it names no host")
    if parts.netloc.endswith(":"):
        raise CallbackRefused("its port is empty")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise CallbackRefused(f"its port is not a port number: {exc}") from exc
    literal = _ip(host)
    if literal is None and _NUMERIC_HOST.match(host):
        raise CallbackRefused(f"host {host!r} is a non-canonical IP address form")
    segments = tuple(unquote(s) for s in parts.path.split("/") if s)
    if any(s in (".", "..") or "/" in s or "\\" in s for s in segments) or re.search(r"%2e|%2f|%5c", parts.path, re.I):
        raise CallbackRefused("dot segments and encoded slashes or dots are not allowed in a callback path")
    query = f"?{parts.query}" if parts.query else ""
    return ParsedURL(scheme, str(literal) if literal else host.lower(), port, segments, (parts.path or "/") + query)


def _special(address: IPAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return _special(mapped)
    return (
        address in METADATA
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CallbackRefused(f"host {host!r} does not resolve: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


@lru_cache(maxsize=64)
def allow_entries(allow: tuple[str, ...]) -> tuple[AllowEntry, ...]:
    return tuple(AllowEntry.parse(entry) for entry in allow)


def checked_callback(url: str, allow: tuple[str, ...], resolve: Resolver = _resolve) -> CallbackTarget:
    """The callback target if `url` is allowed; CallbackRefused saying why otherwise."""
    entries = allow_entries(allow)
    parsed = _parsed(url)
    if not any(entry.admits(parsed) for entry in entries):
        raise CallbackRefused(
            "no allow-list entry admits its scheme, host, port and path "
            f"(allowed: {', '.join(allow) or 'none configured'})"
        )
    literal = _ip(parsed.host)
    addresses = (
        [literal] if literal else [ipaddress.ip_address(a.split("%")[0]) for a in resolve(parsed.host, parsed.port)]
    )
    named = {entry.literal for entry in entries if entry.literal is not None}
    for address in addresses:
        if _special(address) and address not in named:
            raise CallbackRefused(
                f"{parsed.host} is (or resolves to) {address}, a loopback, private, link-local or metadata "
                "address that no allow-list entry names"
            )
    if not addresses:
        raise CallbackRefused(f"host {parsed.host!r} resolves to no address")
    address = addresses[0]
    shown = f"[{address}]" if address.version == 6 else str(address)
    default = parsed.port == DEFAULT_PORTS[parsed.scheme]
    host_header = (f"[{parsed.host}]" if literal and literal.version == 6 else parsed.host) + (
        "" if default else f":{parsed.port}"
    )
    return CallbackTarget(
        url,
        f"{parsed.scheme}://{shown}:{parsed.port}{parsed.path_and_query}",
        host_header,
        parsed.host if parsed.scheme == "https" and literal is None else None,
    )
