"""Where a source URL leads: a Stream worker must not be turned into a way to read the node's link-local
services (the cloud metadata endpoint at 169.254.169.254 hands out credentials)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def link_local_addresses(url: str) -> list[str]:
    """The link-local addresses the URL's host resolves to (empty when none, or when it does not resolve:
    the request then fails on its own, with its own error)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        found = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    addresses = {str(info[4][0]) for info in found}
    return sorted(a for a in addresses if _link_local(a))


def _link_local(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_link_local or address == "fd00:ec2::254"  # AWS's IPv6 metadata address
