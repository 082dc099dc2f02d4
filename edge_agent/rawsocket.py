"""The production frame source: an AF_PACKET socket with the kernel's probe-request filter.

It needs no libpcap and no scapy, which matters on a router with a few MB of flash. The kernel
filter (edge_agent.bpf) drops everything but probe requests before they reach user space.
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
from typing import Any

from . import bpf
from .interfaces import (
    _CAP_HINT,
    ARPHRD_TO_LINKTYPE,
    LINKTYPE_IEEE802_11_RADIOTAP,
    CaptureError,
    _permission_error,
    _sysfs,
    check_interface,
)

# Logged under the capture's name, as before the split: logging set up for it still applies.
log = logging.getLogger("footfall.edge_agent.capture")

# Python's socket module lacks most AF_PACKET constants; values from <linux/if_packet.h>.
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", bpf.SO_ATTACH_FILTER)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


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
