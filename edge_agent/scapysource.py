"""The fallback frame source: scapy's layer-2 listener, with the same filter as the raw socket."""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Iterator

from . import bpf
from .interfaces import (
    _CAP_HINT,
    ARPHRD_IEEE80211_RADIOTAP,
    ARPHRD_TO_LINKTYPE,
    LINKTYPE_IEEE802_11_RADIOTAP,
    SYS_NET,
    CaptureError,
    _permission_error,
    check_interface,
)
from .rawsocket import RawSocketSource

# Logged under the capture's name, as before the split: logging set up for it still applies.
log = logging.getLogger("footfall.edge_agent.capture")


class ScapySource:
    """Fallback through scapy's layer-2 listener (BSD/macOS BPF devices, or debugging).

    The kernel filter is libpcap's ``type mgt subtype probe-req``; every frame is then checked
    again with the same BPF program as `RawSocketSource` (in Python), so both sources yield
    exactly the same frames - also where libpcap is missing and no kernel filter can be set.
    """

    def __init__(
        self,
        iface: str,
        snaplen: int = 4096,
        *,
        require_monitor: bool = True,
        poll_s: float = 0.2,
        kernel_filter: bool = True,
        rcvbuf: int | None = 4 << 20,
    ) -> None:
        # Outside Linux there is no sysfs to check; scapy reports its own errors there.
        linux = SYS_NET.is_dir()
        arphrd = check_interface(iface, require_monitor) if linux else ARPHRD_IEEE80211_RADIOTAP
        try:
            import scapy.arch  # noqa: F401 - sets conf.L2listen for this platform
            from scapy.config import conf
            from scapy.error import Scapy_Exception
        except ImportError as exc:
            raise CaptureError("scapy sources need the capture extra: pip install 'footfall[capture]'") from exc
        self.iface = iface
        self.snaplen = snaplen
        self.poll_s = poll_s
        self.linktype = ARPHRD_TO_LINKTYPE.get(arphrd, LINKTYPE_IEEE802_11_RADIOTAP)
        self.program = bpf.probe_request_program(snaplen)
        self.stats: dict[str, int] = {"frames": 0, "bytes": 0, "filtered": 0, "errors": 0, "kernel_filter": 0}
        self._closed = False
        flt = bpf.PROBE_REQUEST_FILTER if kernel_filter else None
        # scapy warns that it has no dissector for link type 803; we only want the bytes.
        scapy_log = logging.getLogger("scapy.runtime")
        level = scapy_log.level
        scapy_log.setLevel(logging.ERROR)
        try:
            try:
                self._sock = conf.L2listen(iface=iface, filter=flt, promisc=False)
                self.stats["kernel_filter"] = int(flt is not None)
            except Scapy_Exception as exc:
                if flt is None:
                    raise
                log.warning("scapy cannot set the kernel filter on %s (%s); filtering in Python", iface, exc)
                self._sock = conf.L2listen(iface=iface, filter=None, promisc=False)
        except OSError as exc:
            if _permission_error(exc):
                raise CaptureError(f"cannot listen on {iface!r} with scapy: {_CAP_HINT}") from exc
            raise CaptureError(f"cannot listen on {iface!r} with scapy: {exc}") from exc
        except Scapy_Exception as exc:
            raise CaptureError(f"cannot listen on {iface!r} with scapy: {exc}") from exc
        finally:
            scapy_log.setLevel(level)
        ins = getattr(self._sock, "ins", None)
        if rcvbuf and isinstance(ins, socket.socket):
            # scapy's 64 KB default overflows on one probe burst plus the frames libpcap's looser
            # filter lets through for the Python check to drop.
            RawSocketSource._grow_rcvbuf(ins, rcvbuf)

    def read(self, timeout: float | None = None) -> tuple[float, bytes] | None:
        deadline = time.monotonic() + (self.poll_s if timeout is None else timeout)
        while not self._closed:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            try:
                ready, _, _ = select.select([self._sock], [], [], min(wait, self.poll_s or wait))
                if not ready:
                    continue
                _cls, data, ts = self._sock.recv_raw(self.snaplen)
            except (OSError, ValueError) as exc:
                if self._closed:
                    return None
                self.stats["errors"] += 1
                if not (SYS_NET / self.iface).exists():
                    raise CaptureError(f"interface {self.iface!r} went away during capture ({exc})") from exc
                time.sleep(self.poll_s or 0.1)
                continue
            if data is None:
                continue
            # Frames queued before scapy attached its filter, or no kernel filter at all.
            if not bpf.accepts(self.program, data):
                self.stats["filtered"] += 1
                continue
            self.stats["frames"] += 1
            self.stats["bytes"] += len(data)
            return (float(ts) if ts is not None else time.time()), bytes(data)
        return None

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        while not self._closed:
            item = self.read()
            if item is not None:
                yield item

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self) -> ScapySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
