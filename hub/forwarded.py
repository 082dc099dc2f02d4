"""Who a request came from, and whether over HTTPS, when a reverse proxy may stand in front.

- Client address: the socket peer; ``X-Forwarded-For`` only when the peer is a configured
  trusted proxy (``client_address``), else any client could pick the address it is counted as.
  IPv6 clients are counted per /64, the block one host controls.
- The session cookie is ``Secure`` whenever the request came over HTTPS: served with TLS, or
  from a trusted proxy whose ``X-Forwarded-Proto`` says https (``forwarded_https``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["127.0.0.1", "10.0.0.0/8"]`` -> networks; raises ValueError naming a bad entry."""
    out = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        try:
            out.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {spec!r}") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _rate_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # One IPv6 host usually has a whole /64 to itself: counting single addresses would hand an
    # attacker 2**64 fresh limits.
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The address a login is counted against.

    ``peer`` is the socket peer, ``forwarded_for`` the request's ``X-Forwarded-For`` header
    values. The header is followed only from a trusted proxy, right to left (each proxy appends
    the address it received from), stopping at the first hop that is not itself a trusted proxy:
    the entries left of it were written by the client and prove nothing.
    """
    if not peer:
        return "unknown"
    addr = _ip(peer)
    if addr is None:
        return peer  # not an IP (a test client, a Unix socket): counted under its own name
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    while hops and any(addr in net for net in trusted):
        hop = _ip(hops.pop())
        if hop is None:
            break  # a garbled entry: count the request against the proxy that handed it over
        addr = hop
    return _rate_key(addr)


def forwarded_https(peer: str | None, forwarded_proto: Sequence[str], trusted: Sequence[IPNetwork]) -> bool:
    """Whether the reverse proxy in front says its client spoke HTTPS to it.

    ``forwarded_proto`` is the request's ``X-Forwarded-Proto`` header values. Believed only from
    a trusted proxy (any client can send the header), and only its last entry: the one the
    proxy next to us wrote about the connection it accepted.
    """
    addr = _ip(peer) if peer else None
    if addr is None or not any(addr in net for net in trusted):
        return False
    values = [v.strip().lower() for value in forwarded_proto for v in value.split(",") if v.strip()]
    return bool(values) and values[-1] == "https"
