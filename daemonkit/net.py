"""Address types and the small parsers both daemons need: HOST:PORT, and timestamps as the APIs show them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

Address = IPv4Address | IPv6Address
Interface = IPv4Interface | IPv6Interface

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


@dataclass(frozen=True, slots=True)
class HostPort:
    """Where a server listens: an IP address or a host name (IPv6 without brackets), and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str, names: bool = False) -> HostPort | None:
    """HOST:PORT or [IPV6]:PORT (port 1..65535); host names only with `names`; None when not of that form.

    An IPv6 address must be bracketed: "::1:80" could be read two ways."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        address = ip_address_or_none(host[1:-1], 6)
        return HostPort(str(address), int(port)) if address is not None else None
    address = ip_address_or_none(host, 4)
    if address is not None:
        return HostPort(str(address), int(port))
    if names and _HOSTNAME.fullmatch(host):
        return HostPort(host, int(port))
    return None


def ip_address_or_none(text: str, version: int | None = None) -> Address | None:
    """The address `text` names (of that IP version, when given), else None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address if version in (None, address.version) else None


def iso_ms(value: datetime) -> str:
    """UTC with milliseconds and a Z, as the status JSON and the HTTP API show times: 2026-11-22T10:00:00.000Z."""
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
