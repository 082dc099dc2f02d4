"""Probe-request frames as sniffers capture them, and a minimal pcap writer.

Layout, identical to the real captures (link type 127, 15-byte radiotap header):

    radiotap  00 00 0f 00 | present 2e 00 00 00 (Flags, Rate, Channel, dBm_AntSignal)
              flags 10 (frame includes FCS) | rate | freq u16 | channel flags u16 | signal s8
    802.11    40 00 (probe request) | duration 00 00 | DA ff*6 | SA mac | BSSID ff*6 | seq ctl u16
    body      information elements (SSID first)
    FCS       CRC-32 of the 802.11 header and body, little endian

Built with ``struct``/bytes joins only: a day of frames must take seconds, not minutes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from footfall.tools.simulator.radio import channel_freq

LINKTYPE_IEEE802_11_RADIOTAP = 127
_RT_HEAD = b"\x00\x00\x0f\x00\x2e\x00\x00\x00\x10"
_PROBE_HEAD = b"\x40\x00\x00\x00" + b"\xff" * 6
_BSSID = b"\xff" * 6
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_IEEE802_11_RADIOTAP)
_REC = struct.Struct("<IIII")
_SEQ = struct.Struct("<H")


def radiotap_prefix(channel: int, rate: int) -> bytes:
    """The radiotap header up to (not including) the signal byte, for one sniffer channel."""
    # CCK rates (1-11 Mbps) vs OFDM: channel flags 0x20/0x40, plus 0x80 for 2.4 GHz.
    ofdm = rate not in (2, 4, 11, 22)
    chflags = 0x80 | (0x40 if ofdm else 0x20)
    return _RT_HEAD + struct.pack("<BHH", rate, channel_freq(channel), chflags)


def probe_request(rt_prefix: bytes, rssi: int, mac: bytes, seq: int, body: bytes) -> bytes:
    """One captured frame: radiotap + probe request + FCS."""
    mpdu = _PROBE_HEAD + mac + _BSSID + _SEQ.pack((seq & 0xFFF) << 4) + body
    return rt_prefix + bytes((rssi & 0xFF,)) + mpdu + (zlib.crc32(mpdu) & 0xFFFFFFFF).to_bytes(4, "little")


class PcapWriter:
    """Classic pcap (microsecond timestamps), little endian, link type 127."""

    def __init__(self, path: str | Path) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close()/__exit__
        self._f.write(_PCAP_HEADER)
        self.count = 0

    def write(self, ts_us: int, frame: bytes) -> None:
        n = len(frame)
        self._f.write(_REC.pack(ts_us // 1_000_000, ts_us % 1_000_000, n, n))
        self._f.write(frame)
        self.count += 1

    def write_all(self, records: Iterable[tuple[int, bytes]]) -> None:
        pack = _REC.pack
        chunks = []
        for ts_us, frame in records:
            n = len(frame)
            chunks.append(pack(ts_us // 1_000_000, ts_us % 1_000_000, n, n))
            chunks.append(frame)
            if len(chunks) >= 20000:
                self._f.write(b"".join(chunks))
                chunks.clear()
            self.count += 1
        self._f.write(b"".join(chunks))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_pcap(path: str | Path, records: Iterable[tuple[int, bytes]]) -> int:
    """Write (timestamp in microseconds, frame) records; returns the number written."""
    with PcapWriter(path) as w:
        w.write_all(records)
        return w.count
