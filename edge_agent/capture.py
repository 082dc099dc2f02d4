"""Live frame sources: where the agent's `(timestamp, radiotap frame)` stream comes from.

Every source - a pcap file, a raw packet socket, scapy - has one shape (`FrameSource`): iterate
it for `(ts, frame_bytes)`, read `.linktype` (127 = radiotap) and the `.stats` counters, and
`close()` it. `open_source()` picks one from a spec string:

    pcap:PATH | PATH.pcap | PATH.pcapng   replay a capture file (edge_agent.pcapfile)
    iface:NAME                            raw AF_PACKET socket + in-kernel probe-request filter
                                          (edge_agent.rawsocket)
    scapy:NAME                            scapy's listener (optional extra), same filter
                                          (edge_agent.scapysource)

The raw-socket source is the production path: it needs no libpcap and no scapy, which matters
on a router with a few MB of flash. The kernel filter (edge_agent.bpf) drops everything but
probe requests before they reach user space.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from .interfaces import LINKTYPE_IEEE802_11, LINKTYPE_IEEE802_11_RADIOTAP, SYS_NET, CaptureError, _valid_ifname
from .rawsocket import RawSocketSource
from .scapysource import ScapySource

# what the parser decodes (edge_agent.parse), for the errors of file sources
DECODABLE_LINKTYPES = {LINKTYPE_IEEE802_11_RADIOTAP: "802.11 + radiotap", LINKTYPE_IEEE802_11: "802.11"}


@runtime_checkable
class FrameSource(Protocol):
    """What the agent reads frames from. Iteration ends when the source is exhausted or closed."""

    linktype: int
    stats: dict[str, int]

    def __iter__(self) -> Iterator[tuple[float, bytes]]: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called: a quiet ``read`` then means the end, not silence."""
        ...


PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap")


LIVE_IGNORED_OPTS = ("realtime",)


def open_source(spec: str, **opts: Any) -> FrameSource:
    """Open a frame source from `pcap:PATH`, a `.pcap`/`.pcapng` path, `iface:NAME` or `scapy:NAME`.

    `opts` go to the source's constructor; `realtime` (pace a file replay) is dropped for live
    sources, which are real time by nature, so callers can pass one option set for any spec.
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind == "pcap":
        path = rest
    elif spec.lower().endswith(PCAP_SUFFIXES) and not (sep and kind in ("iface", "scapy")):
        path = spec
    else:
        path = None
    if path is not None:
        if not path:
            raise CaptureError("pcap: needs a file path, e.g. pcap:/var/lib/footfall/sample.pcap")
        from .pcapfile import PcapError, PcapSource  # only file replay needs it

        try:
            src = PcapSource(path, **opts)
            # now, not at the first frame: an Ethernet capture is a clear error, not a traceback
            src.require_linktype(DECODABLE_LINKTYPES)
        except (OSError, PcapError) as exc:
            raise CaptureError(str(exc)) from exc
        return src
    live_opts = {k: v for k, v in opts.items() if k not in LIVE_IGNORED_OPTS}
    if sep and kind == "iface":
        return RawSocketSource(rest, **live_opts)
    if sep and kind == "scapy":
        return ScapySource(rest, **live_opts)
    hint = ""
    if _valid_ifname(spec) and (SYS_NET / spec).exists():
        hint = f" - did you mean iface:{spec}?"
    raise CaptureError(
        f"unknown capture source {spec!r}: use pcap:PATH, a .pcap/.pcapng file, iface:NAME or scapy:NAME{hint}"
    )
