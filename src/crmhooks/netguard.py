"""Which addresses webhooks may reach (contract section 9).

Used by webhook registration and by the sender at connection time alike, so it sits below both.
Loopback, private, link-local (``169.254.169.254`` included), multicast, reserved and
unspecified addresses are refused, in IPv4 and IPv6, IPv4-mapped and NAT64/6to4 forms
included, unless a network of ``CRMHOOKS_ALLOWED_TARGETS`` holds the address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int) -> Sequence[str]:
    """Every address ``host`` resolves to (blocking; run it in a thread)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})
