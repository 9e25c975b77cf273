"""Which addresses webhooks may reach (docs/webhooks.md#address-guard), and what a webhook
URL's host is.

Used by webhook registration and by the sender at connection time alike, so it sits below both.
Loopback, private, link-local (``169.254.169.254`` included), multicast, reserved and
unspecified addresses are refused, in IPv4 and IPv6, IPv4-mapped and NAT64/6to4 forms
included, unless a network of ``CRMHOOKS_ALLOWED_TARGETS`` holds the address.

A URL is read here exactly as the HTTP client reads it (yarl, which aiohttp uses): the host
checked is the host connected to. Hosts in the C library's legacy IPv4 forms (``2130706433``,
``0x7f.1``, ``127.1``) are addresses, not names: the system maps them without any lookup.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from yarl import URL

from crmhooks.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allowed(raw: str | None) -> tuple[Network, ...]:
    """``CRMHOOKS_ALLOWED_TARGETS``: comma-separated CIDRs such as ``127.0.0.0/8``."""
    out: list[Network] = []
    for part in (raw or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"CRMHOOKS_ALLOWED_TARGETS: {part!r} is not a CIDR") from None
    return tuple(out)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return is_public(inner)
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


@dataclass(frozen=True)
class Guard:
    allowed: tuple[Network, ...] = ()

    def permits(self, address: str | IPAddress) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.ip_address(str(ip).split("%")[0])
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return True
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_v4(ip)
            if inner is not None and any(inner in net for net in self.allowed if net.version == 4):
                return True
        return is_public(ip)

    def refused(self, addresses: Iterable[str]) -> list[str]:
        """The addresses of ``addresses`` that may not be reached."""
        return [a for a in addresses if not self.permits(a)]


# One part of a legacy IPv4 address: decimal, octal (leading 0) or hexadecimal (0x).
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
# A last label that makes a host a number (the URL standard's "ends in a number").
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as ``inet_aton`` reads it, or None if it is not such a number.

    One to four parts; the last fills the bytes left, so ``127.1``, ``0x7f.0.1``,
    ``017700000001`` and ``2130706433`` are all 127.0.0.1.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isascii() and _V4_PART.fullmatch(p) for p in parts):
        return None
    values = [_v4_part(p) for p in parts]
    *front, last = values
    if any(v > 255 for v in front) or last >= 256 ** (5 - len(parts)):
        return None
    number = last
    for i, v in enumerate(front):
        number |= v << (24 - 8 * i)
    return ipaddress.IPv4Address(number)


def _v4_part(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8)
    return int(part)


def literal_ip(host: str) -> IPAddress | None:
    """The address ``host`` is, in any form the system takes as an address; None for a name.

    ValueError for a host that looks like an address but is none (``1.2.3.4.5``, ``256.1``,
    ``[::g]``): no name ends in a number, and the system's reading of such hosts is not ours to
    guess. A trailing dot and an IPv6 zone (``%eth0``) do not change the address.
    """
    h = host.strip("[]")
    if ":" in h:
        try:
            return ipaddress.ip_address(h.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    name = h.removesuffix(".")
    v4 = legacy_ipv4(name)
    if v4 is not None:
        return v4
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        raise ValueError(f"{host!r} ends in a number but is not an IPv4 address")
    return None


@dataclass(frozen=True)
class Target:
    """A webhook URL as the HTTP client reads it."""

    host: str  # what is resolved or connected to: IDNA-encoded, without brackets
    port: int
    address: IPAddress | None  # the host is this address (in any form)
    credentials: bool  # the URL holds ``user@`` or ``user:password@``


def parse_target(url: str) -> Target:
    """Read ``url`` as aiohttp will (yarl); ValueError saying why it cannot be a target."""
    try:
        parsed = URL(url)
        host = parsed.raw_host
    except ValueError as e:  # UnicodeError (a host IDNA cannot encode) included
        raise ValueError(f"{url!r} is not a URL with a host that can be encoded: {e}") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise ValueError(f"{url!r} is not an http or https URL with a host")
    if not host.isascii():
        raise ValueError(f"{url!r}: the host cannot be encoded for DNS")
    address = literal_ip(host)
    # The decoded form too: were the client ever to connect to it, it is the same check.
    if address is None and parsed.host and parsed.host != host:
        address = literal_ip(parsed.host)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    credentials = parsed.raw_user is not None or parsed.raw_password is not None
    return Target(host, port, address, credentials)


def shown_url(url: str) -> str:
    """``url`` with its user and password (if any) shown as ``****``: what reads and payloads
    may show of a URL stored before registration refused credentials."""
    try:
        parsed = URL(url)
    except ValueError:
        return url
    if parsed.raw_user is None and parsed.raw_password is None:
        return url
    masked = parsed.with_user("****")
    if parsed.raw_password is not None:
        masked = masked.with_password("****")
    return str(masked)


def resolve(host: str, port: int) -> Sequence[str]:
    """Every address ``host`` resolves to (blocking; run it in a thread)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})
