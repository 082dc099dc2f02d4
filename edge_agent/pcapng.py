"""Reading pcapng: the block iterator behind ``pcapfile.PcapSource`` and the helpers it needs.

``pcapfile`` recognizes the format, owns the stats and the public API (import from there).
This module walks the blocks: sections of either byte order, interface descriptions
(``if_tsresol`` and ``if_tsoffset`` honoured), enhanced, simple and obsolete packet blocks.
Other block types are skipped and counted. Damage is handled the way ``pcapfile`` describes.

Every function here that reads the file takes the read size as ``read_size`` rather than having
a constant of its own, so ``pcapfile.CHUNK`` stays the one setting for both formats (the tests
patch it to cut records across reads).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Generator
from typing import IO, TYPE_CHECKING, BinaryIO

from footfall.edge_agent.pcapresync import Reporter, pcapng_check, resync

if TYPE_CHECKING:
    from footfall.edge_agent.pcapfile import _Header

MAX_BLOCK = 1 << 26

PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D

_BT_IDB = 1
_BT_OPB = 2  # obsolete packet block
_BT_SPB = 3
_BT_EPB = 6

_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14


def read_at_least(f: IO[bytes], n: int, have: bytes, read_size: int) -> bytes:
    """``have`` extended from ``f`` to at least ``n`` bytes, or to the end of the file."""
    while len(have) < n:
        more = f.read(max(read_size, n - len(have)))
        if not more:
            break
        have += more
    return have


def _tsresol_divisor(v: int) -> float:
    # bit 7 set: a power of two, else a power of ten (pcapng spec, if_tsresol)
    return float(2 ** (v & 0x7F)) if v & 0x80 else float(10**v)


def _idb(buf: bytes, off: int, blen: int, e: str) -> tuple[int, int, float, float]:
    """(linktype, snaplen, divisor, offset seconds) of an interface description block."""
    linktype, _, snaplen = struct.unpack_from(e + "HHI", buf, off + 8)
    divisor = 1e6
    tsoffset = 0.0
    o = off + 16
    stop = off + blen - 4
    while o + 4 <= stop:
        code, ln = struct.unpack_from(e + "HH", buf, o)
        if code == 0:
            break
        if o + 4 + ln > stop:
            break
        if code == _OPT_TSRESOL and ln >= 1:
            divisor = _tsresol_divisor(buf[o + 4])
        elif code == _OPT_TSOFFSET and ln >= 8:
            tsoffset = float(struct.unpack_from(e + "q", buf, o + 4)[0])
        o += 4 + ((ln + 3) & ~3)
    return linktype, snaplen, divisor, tsoffset


def scan_linktype(f: IO[bytes], head: bytes, hdr: _Header, read_size: int) -> bytes:
    """Walk the first blocks to the first interface description, which gives the link type."""
    buf = head
    off = 0
    e = hdr.endian
    for _ in range(4096):
        buf = read_at_least(f, off + 12, buf, read_size)
        if off + 12 > len(buf):
            return buf
        btype, blen = struct.unpack_from(e + "II", buf, off)
        if btype == PCAPNG_SHB:
            e = "<" if buf[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            (blen,) = struct.unpack_from(e + "I", buf, off + 4)
        if blen < 12 or blen & 3 or blen > MAX_BLOCK:
            return buf  # iteration will count it as a bad record
        buf = read_at_least(f, off + blen, buf, read_size)
        if off + blen > len(buf):
            return buf
        if btype == _BT_IDB:
            if blen >= 20:
                hdr.linktype, hdr.snaplen, _, _ = _idb(buf, off, blen, e)
            return buf
        off += blen
    return buf


def iter_pcapng(
    f: BinaryIO, buf: bytes, hdr: _Header, stats: dict[str, int], closed: threading.Event, name: str, read_size: int
) -> Generator[tuple[float, bytes], None, None]:
    report = Reporter(name)
    consumed = 0  # file offset of buf[0], for the warnings
    e = hdr.endian
    block = struct.Struct(e + "II").unpack_from
    epb = struct.Struct(e + "IIIII").unpack_from
    # per interface: (linktype, snaplen, divisor, tsoffset)
    ifaces: list[tuple[int, int, float, float]] = []
    want = hdr.linktype
    off = 0
    last_ts = 0.0
    frames = 0
    nbytes = 0
    try:
        while True:
            end = len(buf)
            bad = ""
            while off + 12 <= end:
                btype, blen = block(buf, off)
                if btype == PCAPNG_SHB:
                    # a new section may switch byte order; its length is in the new order
                    bom = buf[off + 8 : off + 12]
                    se = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
                    if not se:
                        bad = f"section header with a bad byte-order magic {bom.hex()}"
                        break
                    e = se
                    block = struct.Struct(e + "II").unpack_from
                    epb = struct.Struct(e + "IIIII").unpack_from
                    btype, blen = block(buf, off)
                    ifaces = []  # interface ids are per section
                if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                    bad = f"corrupt block header (type {btype:#x}, length {blen})"
                    break
                nxt = off + blen
                if nxt > end:
                    break
                if btype in (_BT_EPB, _BT_OPB):  # packet blocks, the enhanced one by far the commonest
                    if btype == _BT_EPB:
                        ifid, hi, lo, caplen, _ = epb(buf, off + 8) if blen >= 32 else (0, 0, 0, blen, 0)
                    elif blen < 32:  # the obsolete packet block: a 16-bit interface id and drops count
                        ifid, hi, lo, caplen = 0, 0, 0, blen
                    else:
                        ifid, _, hi, lo, caplen, _ = struct.unpack_from(e + "HHIIII", buf, off + 8)
                    if 28 + caplen > blen - 4 or ifid >= len(ifaces):
                        stats["bad_records"] += 1
                        report.warn(
                            "packet block at offset %d does not fit its block or names no interface; skipped",
                            consumed + off,
                        )
                    else:
                        lt, _, divisor, tsoff = ifaces[ifid]
                        if lt == want:
                            last_ts = ((hi << 32) | lo) / divisor + tsoff
                            yield last_ts, buf[off + 28 : off + 28 + caplen]
                            frames += 1
                            nbytes += caplen
                        else:
                            stats["other_linktype"] += 1
                    off = nxt
                    continue
                if btype == _BT_IDB:
                    if blen < 20:
                        # kept as an interface of no link type: the ids of later ones stay right
                        stats["bad_records"] += 1
                        report.warn("interface block at offset %d is too short (%d bytes)", consumed + off, blen)
                        ifaces.append((-1, 0, 1e6, 0.0))
                    else:
                        ifaces.append(_idb(buf, off, blen, e))
                        if want is None:
                            want = ifaces[-1][0]
                elif btype == _BT_SPB:
                    # no timestamp, no interface id: interface 0, the previous frame's time
                    (orig,) = struct.unpack_from(e + "I", buf, off + 8) if blen >= 16 else (0,)
                    if not ifaces or blen < 16:
                        stats["bad_records"] += 1
                        report.warn("simple packet block at offset %d without an interface; skipped", consumed + off)
                    else:
                        lt, snap, _, _ = ifaces[0]
                        caplen = min(orig, blen - 16, snap or orig)
                        if lt == want:
                            yield last_ts, buf[off + 12 : off + 12 + caplen]
                            frames += 1
                            nbytes += caplen
                        else:
                            stats["other_linktype"] += 1
                elif btype != PCAPNG_SHB:
                    stats["skipped_blocks"] += 1
                off = nxt
            stats["frames"] += frames
            stats["bytes"] += nbytes
            frames = nbytes = 0
            check = pcapng_check(e)
            if not bad:
                chunk = b"" if closed.is_set() else f.read(read_size)
                if chunk:
                    buf = buf[off:] + chunk
                    consumed += off
                    off = 0
                    continue
                if off >= end or closed.is_set():
                    return
                if resync(f, buf, off + 4, 4, check, closed)[1] is None:
                    stats["truncated"] += 1
                    report.warn(
                        "last block cut short at offset %d (%d bytes present): a capture still being written, "
                        "or a full disk",
                        consumed + off,
                        end - off,
                    )
                    return
                bad = f"corrupt block length {blen} (runs past the end of the file)"
            # blocks are 4-byte aligned: a resync only looks there
            at = consumed + off
            stats["bad_records"] += 1
            buf, found, dropped = resync(f, buf, off + 4, 4, check, closed)
            consumed += dropped
            to = consumed + (len(buf) if found is None else found)
            stats["skipped_bytes"] += to - at
            report.resynced(bad, at, None if found is None else to, to)
            if found is None:
                return
            off = found
    finally:
        stats["frames"] += frames
        stats["bytes"] += nbytes
        f.close()
