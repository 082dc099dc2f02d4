"""Finding the next good record after a corrupt one in a pcap/pcapng file (``pcapfile``'s damage path).

A record header that cannot be right (a captured length beyond ``MAX_RECORD`` or past the end
of the file, a pcapng block length that is not a multiple of 4) leaves the reader at an unknown
place: the bytes after it are the rest of a frame, or another record. Stopping there silently lost the rest of the file,
so the reader looks for the next offset where records line up again and goes on from there,
after a WARNING naming the file and both offsets. Lining up means:

* classic pcap: a header with a non-zero captured length within the limit, no larger than the
  original length, a sub-second field below one second and a time within a day of the last good
  record, followed by another such header, or by the end of the file exactly. Two headers in a
  row that agree by chance inside frame bytes do not happen on real captures: a frame would have
  to embed a timestamp of the same day followed, at the offset it names, by a second one;
* pcapng: a block of a known type whose length (a multiple of 4, at least 12) is repeated at
  its end, as every pcapng block repeats it.

Nothing found before the end of the file: the rest is skipped and said so. Either way the reader
counts ``bad_records`` and ``skipped_bytes``, so a consumer can tell a clean read from a
resynchronised one.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from typing import BinaryIO

log = logging.getLogger("footfall.edge_agent.pcapfile")

CHUNK = 1 << 22
TIME_WINDOW_S = 86_400
# A corrupt file should not fill a log: past this many warnings per read, one more line says so.
MAX_WARNINGS = 10

# Block types a resync may land on (pcapng spec section 11.1); a section header block is not
# one: its length may be in the other byte order.
_NG_TYPES = frozenset((1, 2, 3, 4, 5, 6))

# check(buf, pos, at_eof): True the records line up at pos, False not here, None need more bytes
Check = Callable[[bytes, int, bool], "bool | None"]


def resync(
    f: BinaryIO, buf: bytes, pos: int, step: int, check: Check, closed: threading.Event
) -> tuple[bytes, int | None, int]:
    """Scan from ``buf[pos]`` (``step`` bytes at a time) for an offset where ``check`` holds.

    Reads more of the file as needed and drops what it scanned past. Returns (buffer, offset of
    the next good record in it or None when the file ended first, bytes dropped from the front
    of the given buffer)."""
    dropped = 0
    at_eof = False
    while True:
        end = len(buf)
        while pos < end:
            ok = check(buf, pos, at_eof)
            if ok is None:
                break
            if ok:
                return buf, pos, dropped
            pos += step
        if at_eof or closed.is_set():
            return buf, None, dropped
        chunk = f.read(CHUNK)
        if not chunk:
            at_eof = True
            continue
        buf = buf[pos:] + chunk
        dropped += pos
        pos = 0


def pcap_check(endian: str, limit: int, frac_max: int, last_sec: int | None) -> Check:
    """Whether a classic pcap record header at ``pos`` starts two that line up (see the module doc)."""
    unpack = struct.Struct(endian + "IIII").unpack_from

    def plausible(buf: bytes, pos: int) -> int:
        sec, frac, incl, orig = unpack(buf, pos)
        if not 0 < incl <= limit or orig < incl or frac >= frac_max:
            return -1
        if last_sec is not None and abs(sec - last_sec) > TIME_WINDOW_S:
            return -1
        return incl

    def check(buf: bytes, pos: int, at_eof: bool) -> bool | None:
        end = len(buf)
        if pos + 16 > end:
            return False if at_eof else None
        incl = plausible(buf, pos)
        if incl < 0:
            return False
        nxt = pos + 16 + incl
        if nxt + 16 <= end:
            return plausible(buf, nxt) >= 0
        if at_eof:
            return nxt == end
        return None

    return check


def pcapng_check(endian: str) -> Check:
    """Whether a pcapng block of a known type, with its length repeated at its end, starts at ``pos``."""
    head = struct.Struct(endian + "II").unpack_from
    tail = struct.Struct(endian + "I").unpack_from

    def check(buf: bytes, pos: int, at_eof: bool) -> bool | None:
        end = len(buf)
        if pos + 8 > end:
            return False if at_eof else None
        btype, blen = head(buf, pos)
        if btype not in _NG_TYPES or blen < 12 or blen & 3 or blen > 1 << 26:
            return False
        if pos + blen > end:
            return False if at_eof else None
        return tail(buf, pos + blen - 4)[0] == blen

    return check


class Reporter:
    """The WARNING lines of one read of one file (bounded by ``MAX_WARNINGS``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def warn(self, msg: str, *args: object) -> None:
        self.count += 1
        if self.count <= MAX_WARNINGS:
            log.warning("%s: " + msg, self.name, *args)
        elif self.count == MAX_WARNINGS + 1:
            log.warning("%s: more damage than this; the reader's counters have the totals", self.name)

    def resynced(self, what: str, at: int, found: int | None, file_end: int) -> None:
        if found is None:
            self.warn(
                "%s at offset %d; no valid record after it, the last %d bytes are skipped", what, at, file_end - at
            )
        else:
            self.warn(
                "%s at offset %d; skipped %d bytes to the next valid record at offset %d", what, at, found - at, found
            )
