"""Which URLs a stage-change webhook may be sent to (server-side request forgery policy).

A subscriber names a URL and the stage engine POSTs to it from inside the network, so an
unchecked URL would make the engine call what only it can reach: a cloud metadata endpoint
(``169.254.169.254``), a database's HTTP port on ``127.0.0.1``, a service on ``10.x``. So:

- the scheme is ``https`` (``http`` only with ``CLM_WEBHOOK_ALLOW_INSECURE``, for dev);
- every address the host resolves to must be a global unicast address: private, loopback,
  link-local, multicast, reserved, unspecified and shared addresses are refused, IPv4 and
  IPv6 alike (an IPv4-mapped IPv6 address is judged by its IPv4 address);
- unless the host is named in ``CLM_WEBHOOK_ALLOWED_HOSTS`` (an explicit list: a receiver of
  your own inside the network).

The URL is checked when it is subscribed and again before each delivery, which connects to
the address that was checked (a host name's DNS may change between the two: DNS rebinding),
with the host name kept for the TLS certificate check and the ``Host`` header. Redirects are
never followed (the dispatcher's HTTP client does not).

:func:`refusal` is pure (the resolved addresses are given); :func:`resolve` and
:func:`delivery_target` do the DNS look-ups.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allow_insecure: bool = False
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allow_insecure: bool, allowed_hosts: str) -> UrlPolicy:
        hosts = {h.strip().lower().strip("[]") for h in allowed_hosts.split(",")}
        return cls(allow_insecure, frozenset(h for h in hosts if h))


class UrlRefused(Exception):
    """A URL the policy refuses; the message says why."""


def forbidden_address(address: IPAddress) -> bool:
    """Anything but a global unicast address (an IPv4-mapped one judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global
        or address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def parts(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, or :class:`UrlRefused`."""
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError as exc:
        raise UrlRefused(f"not a URL: {exc}") from None
    scheme = split.scheme.lower()
    host = (split.hostname or "").lower()
    if scheme not in {"http", "https"} or not host:
        raise UrlRefused("must be an http(s) URL with a host")
    if split.username is not None or split.password is not None:
        raise UrlRefused("must not carry credentials")
    return scheme, host, port or (443 if scheme == "https" else 80)


def refusal(url: str, addresses: Sequence[str], policy: UrlPolicy) -> str | None:
    """Why ``url`` (whose host resolved to ``addresses``) may not be called, or None."""
    try:
        scheme, host, _ = parts(url)
    except UrlRefused as exc:
        return str(exc)
    if scheme != "https" and not policy.allow_insecure:
        return "must be https (http is allowed only with CLM_WEBHOOK_ALLOW_INSECURE)"
    if host in policy.allowed_hosts:
        return None
    if not addresses:
        return f"host {host!r} does not resolve"
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return f"host {host!r} resolves to {text!r}, not an IP address"
        if forbidden_address(address):
            return (
                f"host {host!r} is or resolves to a non-public address ({address}); "
                "list it in CLM_WEBHOOK_ALLOWED_HOSTS to allow it"
            )
    return None


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal: itself); [] when it does not."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check(url: str, policy: UrlPolicy, resolver: Resolver = resolve) -> str | None:
    """Why ``url`` may not be subscribed (resolving its host now), or None."""
    try:
        _, host, port = parts(url)
    except UrlRefused as exc:
        return str(exc)
    if host in policy.allowed_hosts:
        return refusal(url, [], policy)
    return refusal(url, await resolver(host, port), policy)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery goes: the URL to connect to (the checked address, unless the host
    is allowed by name) and what keeps the host name for TLS and ``Host``."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


async def delivery_target(url: str, policy: UrlPolicy, resolver: Resolver = resolve) -> Target:
    """The checked target of one delivery, or :class:`UrlRefused` (resolved again now)."""
    scheme, host, port = parts(url)
    if host in policy.allowed_hosts:
        if (why := refusal(url, [], policy)) is not None:
            raise UrlRefused(why)
        return Target(url)
    addresses = await resolver(host, port)
    if (why := refusal(url, addresses, policy)) is not None:
        raise UrlRefused(why)
    address = ipaddress.ip_address(addresses[0].split("%", 1)[0])
    if str(address) == host:
        return Target(url)
    split = urlsplit(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if split.port is None else f"{literal}:{split.port}"
    host_header = host if split.port is None else f"{host}:{split.port}"
    pinned = urlunsplit((scheme, netloc, split.path, split.query, ""))
    return Target(pinned, {"Host": host_header}, {"sni_hostname": host})
