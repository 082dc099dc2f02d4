"""Live frame sources: where the agent's `(timestamp, radiotap frame)` stream comes from.

Every source - a pcap file, a raw packet socket, scapy - has one shape (`FrameSource`): iterate
it for `(ts, frame_bytes)`, read `.linktype` (127 = radiotap) and the `.stats` counters, and
`close()` it. `open_source()` picks one from a spec string:

    pcap:PATH | PATH.pcap | PATH.pcapng   replay a capture file (edge_agent.pcapfile)
    iface:NAME                            raw AF_PACKET socket + in-kernel probe-request filter
    scapy:NAME                            scapy's listener (optional extra), same filter

The raw-socket source is the production path: it needs no libpcap and no scapy, which matters
on a router with a few MB of flash. The kernel filter (edge_agent.bpf) drops everything but
probe requests before they reach user space.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from . import bpf

log = logging.getLogger(__name__)

LINKTYPE_ETHERNET = 1
LINKTYPE_IEEE802_11 = 105
LINKTYPE_IEEE802_11_RADIOTAP = 127
# what the parser decodes (edge_agent.parse), for the errors of file sources
DECODABLE_LINKTYPES = {LINKTYPE_IEEE802_11_RADIOTAP: "802.11 + radiotap", LINKTYPE_IEEE802_11: "802.11"}

ARPHRD_ETHER = 1
ARPHRD_IEEE80211 = 801
ARPHRD_IEEE80211_PRISM = 802
ARPHRD_IEEE80211_RADIOTAP = 803
ARPHRD_TO_LINKTYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_IEEE80211: LINKTYPE_IEEE802_11,
    ARPHRD_IEEE80211_RADIOTAP: LINKTYPE_IEEE802_11_RADIOTAP,
}

# Python's socket module lacks most AF_PACKET constants; values from <linux/if_packet.h>.
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", bpf.SO_ATTACH_FILTER)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IFF_UP = 0x1
IFNAMSIZ = 16

SYS_NET = Path("/sys/class/net")

_CAP_HINT = (
    "needs CAP_NET_RAW: run as root, or grant the capabilities once with "
    "`setcap cap_net_raw,cap_net_admin=eip $(readlink -f $(which python3))` "
    "(systemd: AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN)"
)


class CaptureError(RuntimeError):
    """A source cannot be opened or has stopped for good; the message says how to fix it."""


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


def _sysfs(iface: str, attr: str, root: Path = SYS_NET) -> str | None:
    try:
        return (root / iface / attr).read_text().strip()
    except OSError:
        return None


def _valid_ifname(iface: str) -> bool:
    return (
        0 < len(iface) < IFNAMSIZ
        and "/" not in iface
        and not iface.startswith(".")
        and not any(c.isspace() for c in iface)
    )


def check_interface(iface: str, require_monitor: bool = True, root: Path = SYS_NET) -> int:
    """Fail early, with the fix in the message, instead of capturing silence. Returns the ARPHRD type."""
    if not _valid_ifname(iface):
        raise CaptureError(f"{iface!r} is not a valid interface name (1-15 characters, no '/' or spaces)")
    if not (root / iface).exists():
        present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise CaptureError(
            f"interface {iface!r} does not exist (present: {', '.join(present) or 'none'}). "
            "Create a monitor interface with `iw phy phy0 interface add mon0 type monitor && ip link set mon0 up` "
            "(`iw dev` lists the phys)."
        )
    raw_type = _sysfs(iface, "type", root)
    try:
        arphrd = int(raw_type or "")
    except ValueError as exc:
        raise CaptureError(f"cannot read the link type of {iface!r} from {root / iface / 'type'}") from exc
    if require_monitor and arphrd != ARPHRD_IEEE80211_RADIOTAP:
        phy = _sysfs(iface, "phy80211/name", root)
        if phy is None:
            raise CaptureError(
                f"interface {iface!r} is not a Wi-Fi interface in monitor mode (link type {arphrd}, "
                f"need {ARPHRD_IEEE80211_RADIOTAP} = 802.11 + radiotap) and has no wireless phy. "
                "Pick the Wi-Fi card's interface (`iw dev` lists them)."
            )
        if arphrd in (ARPHRD_IEEE80211, ARPHRD_IEEE80211_PRISM):
            raise CaptureError(
                f"interface {iface!r} delivers 802.11 without radiotap headers (link type {arphrd}); "
                f"footfall needs a radiotap monitor interface: `iw phy {phy} interface add mon0 type monitor`."
            )
        raise CaptureError(
            f"interface {iface!r} is not in monitor mode (link type {arphrd}, need {ARPHRD_IEEE80211_RADIOTAP}). "
            f"Fix: `ip link set {iface} down && iw dev {iface} set type monitor && ip link set {iface} up`, "
            f"or keep it and add a monitor interface: `iw phy {phy} interface add mon0 type monitor "
            "&& ip link set mon0 up`."
        )
    flags = _sysfs(iface, "flags", root)
    if flags is not None and not int(flags, 16) & IFF_UP:
        # A socket on a down interface opens fine and then receives nothing, forever.
        raise CaptureError(f"interface {iface!r} is down: `ip link set {iface} up`")
    return arphrd


def _permission_error(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in (errno.EPERM, errno.EACCES)


def _parse_timestamp(data: bytes) -> float | None:
    # struct timespec: 64-bit time_t on 64-bit and modern 32-bit userlands, 32-bit on old ones.
    if len(data) >= 16:
        sec, nsec = struct.unpack_from("=qq", data)
    elif len(data) >= 8:
        sec, nsec = struct.unpack_from("=ii", data)
    else:
        return None
    return sec + nsec / 1e9


class RawSocketSource:
    """Probe requests from a monitor interface through an AF_PACKET socket with a kernel BPF filter.

    `require_monitor=False` exists for tests that push radiotap frames through a veth; production
    code must leave it on - on a managed-mode interface the filter would just match nothing.
    """

    def __init__(
        self,
        iface: str,
        snaplen: int = 4096,
        *,
        require_monitor: bool = True,
        program: bpf.Program | None = None,
        poll_s: float = 0.2,
        rcvbuf: int | None = 4 << 20,
    ) -> None:
        arphrd = check_interface(iface, require_monitor=require_monitor)
        self.iface = iface
        self.snaplen = snaplen
        self.poll_s = poll_s
        self.rcvbuf = rcvbuf
        self.linktype = ARPHRD_TO_LINKTYPE.get(arphrd, LINKTYPE_IEEE802_11_RADIOTAP)
        self.stats: dict[str, int] = {
            "frames": 0,
            "bytes": 0,
            "truncated": 0,
            "drained": 0,
            "kernel_accepted": 0,
            "kernel_drops": 0,
            "errors": 0,
        }
        self.program = program if program is not None else bpf.probe_request_program(snaplen)
        self._closed = False
        self._logged: set[str] = set()
        self._stats_at = 0.0
        self._ancbuf = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(20)
        self._ifindex = _sysfs(iface, "ifindex")
        self._sock = self._open()

    def _open(self) -> socket.socket:
        try:
            # Protocol 0: the socket receives nothing until bind() names one, so no unfiltered
            # frame can slip in before the filter is attached.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            if _permission_error(exc):
                raise CaptureError(f"cannot open a raw socket on {self.iface!r}: {_CAP_HINT}") from exc
            raise CaptureError(f"cannot open a raw socket on {self.iface!r}: {exc}") from exc
        try:
            # Early: the kernel enables receive timestamps from a workqueue, give it a head start.
            with contextlib.suppress(OSError):  # without it, frames are stamped with time.time() at read
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            bpf.attach(sock, bpf.reject_all_program())
            try:
                sock.bind((self.iface, ETH_P_ALL))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise CaptureError(f"interface {self.iface!r} disappeared while opening it") from exc
                raise CaptureError(f"cannot bind a raw socket to {self.iface!r}: {exc}") from exc
            self._set_program(sock, self.program)
            with contextlib.suppress(OSError):  # only used to count snap-length truncation
                sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            if self.rcvbuf:
                self._grow_rcvbuf(sock, self.rcvbuf)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _grow_rcvbuf(sock: socket.socket, size: int) -> None:
        # Probe bursts (a phone sends 10-20 in a few ms on each channel) must not overflow the
        # default ~200 KB queue while the agent is busy; FORCE ignores rmem_max but needs CAP_NET_ADMIN.
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def _set_program(self, sock: socket.socket, program: bpf.Program) -> None:
        """Swap the filter without letting frames matched by the old one through.

        Frames already queued were accepted by whatever filter was attached before; so reject
        everything, drain the queue, then attach the new program (what libpcap does too).
        """
        bpf.validate(program)
        bpf.attach(sock, bpf.reject_all_program())
        drained = 0
        while True:
            try:
                sock.recv(65535, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. ENETDOWN; nothing queued that we want
            drained += 1
        self.stats["drained"] += drained
        bpf.attach(sock, program)
        self.program = list(program)

    def set_filter(self, program: bpf.Program) -> None:
        """Replace the kernel filter on the open socket (frames matched by the old one are discarded)."""
        self._set_program(self._sock, program)

    def refresh_stats(self) -> dict[str, int]:
        """Fold the kernel's counters (reset on every read) into `stats`."""
        if self._closed:
            return self.stats
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return self.stats
        packets, drops = struct.unpack("=II", raw)
        self.stats["kernel_accepted"] += packets
        self.stats["kernel_drops"] += drops
        if drops:
            self._log_once(
                "drops", "kernel dropped %d frames on %s: the agent is not reading fast enough", drops, self.iface
            )
        self._stats_at = time.monotonic()
        return self.stats

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg, *args)

    def read(self, timeout: float | None = None) -> tuple[float, bytes] | None:
        """Next frame, or None when nothing arrived within `timeout` (default: one poll interval)."""
        deadline = time.monotonic() + (self.poll_s if timeout is None else timeout)
        while not self._closed:
            if time.monotonic() - self._stats_at > 1.0:
                self.refresh_stats()
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            try:
                ready, _, _ = select.select([self._sock], [], [], min(wait, self.poll_s or wait))
                if not ready:
                    continue
                data, anc, flags, _addr = self._sock.recvmsg(self.snaplen, self._ancbuf, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except (OSError, ValueError) as exc:
                if self._closed:
                    return None
                self._receive_failed(exc)
                continue
            return self._frame(data, anc, flags)
        return None

    def _frame(self, data: bytes, anc: list[tuple[int, int, bytes]], flags: int) -> tuple[float, bytes]:
        ts: float | None = None
        wire_len = len(data)
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                ts = _parse_timestamp(payload)
            elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(payload) >= 8:
                wire_len = struct.unpack_from("=II", payload)[1]  # tp_status, tp_len
        if flags & socket.MSG_TRUNC or wire_len > len(data):
            self.stats["truncated"] += 1
        self.stats["frames"] += 1
        self.stats["bytes"] += len(data)
        return (ts if ts is not None else time.time()), data

    def _receive_failed(self, exc: BaseException) -> None:
        self.stats["errors"] += 1
        # A removed interface never comes back to this socket, not even under the same name
        # (a new ifindex), so this is final; a merely downed one resumes when set up again.
        if _sysfs(self.iface, "ifindex") != self._ifindex:
            raise CaptureError(
                f"interface {self.iface!r} went away during capture ({exc}); reopen the source once it is back"
            ) from exc
        key = f"recv:{getattr(exc, 'errno', None)}"
        self._log_once(key, "receive on %s failed: %s (counting, retrying)", self.iface, exc)
        time.sleep(self.poll_s or 0.1)  # e.g. ENETDOWN while the interface is down: do not spin

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        while not self._closed:
            item = self.read()
            if item is not None:
                yield item

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self.refresh_stats()
        self._closed = True
        self._sock.close()

    def __enter__(self) -> RawSocketSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
