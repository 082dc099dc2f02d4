"""pcap/pcapng reading: formats, byte orders, resolutions, damage, pacing; and the writer."""

from __future__ import annotations

import logging
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from footfall.edge_agent.pcapfile import MAX_RECORD, PcapError, PcapSource, read_frames, write_pcap

FRAMES = [(1_700_000_000.25 + i * 0.5, bytes([i]) * (10 + i)) for i in range(5)]


def classic(endian: str, nano: bool, frames=FRAMES, linktype: int = 127) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    scale = 1_000_000_000 if nano else 1_000_000
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ts, fr in frames:
        sec, frac = divmod(round(ts * scale), scale)
        out.append(struct.pack(endian + "IIII", sec, frac, len(fr), len(fr)) + fr)
    return b"".join(out)


def pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def ng_block(e: str, btype: int, body: bytes) -> bytes:
    body = pad4(body)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def ng_shb(e: str) -> bytes:
    return ng_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def ng_idb(e: str, linktype: int = 127, tsresol: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts = struct.pack(e + "HH", 9, 1) + pad4(bytes([tsresol])) + struct.pack(e + "HH", 0, 0)
    return ng_block(e, 1, struct.pack(e + "HHI", linktype, 0, 65535) + opts)


def ng_epb(e: str, ifid: int, ticks: int, frame: bytes) -> bytes:
    body = struct.pack(e + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + pad4(frame)
    return ng_block(e, 6, body)


def test_obsolete_packet_blocks_read_like_enhanced_ones(tmp_path: Path) -> None:
    """Type 2 (a 16-bit interface id and a drops count) shares the enhanced block's reading:
    the same frame and time, and a block naming no interface is counted and skipped."""

    def opb(ifid: int, ticks: int, frame: bytes) -> bytes:
        body = struct.pack("<HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
        return ng_block("<", 2, body + pad4(frame))

    data = ng_shb("<") + ng_idb("<") + opb(0, 1_700_000_000_500_000, b"old") + opb(7, 5, b"nowhere")
    data += ng_epb("<", 0, 1_700_000_001_000_000, b"new")
    src = PcapSource(write(tmp_path, "opb.pcapng", data))
    assert [(round(ts, 6), fr) for ts, fr in src] == [(1_700_000_000.5, b"old"), (1_700_000_001.0, b"new")]
    assert src.stats["bad_records"] == 1 and src.stats["frames"] == 2


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_both_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    src = PcapSource(write(tmp_path, "x.pcap", classic(endian, nano)))
    assert (src.format, src.linktype) == ("pcap", 127)
    got = list(src)
    assert [fr for _, fr in got] == [fr for _, fr in FRAMES]
    assert all(abs(a - b) < 1e-6 for (a, _), (b, _) in zip(got, FRAMES, strict=True))
    assert src.stats["frames"] == 5 and src.stats["truncated"] == 0
    assert src.stats["bytes"] == sum(len(fr) for _, fr in FRAMES)


def test_writer_round_trip_and_file_objects(tmp_path: Path) -> None:
    path = tmp_path / "w.pcap"
    assert write_pcap(path, iter(FRAMES), linktype=105) == 5
    src = PcapSource(path)
    assert src.linktype == 105
    assert [fr for _, fr in src] == [fr for _, fr in FRAMES]
    with open(tmp_path / "n.pcap", "wb") as f:
        write_pcap(f, FRAMES, nanosecond=True)
    assert [round(ts, 6) for ts, _ in read_frames(tmp_path / "n.pcap")] == [round(ts, 6) for ts, _ in FRAMES]


def test_real_captures_read_like_scapy(captures: list[Path]) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    for path in captures:
        ours = list(read_frames(path))
        theirs = list(scapy_all.RawPcapReader(str(path)))  # no dissection: just records
        assert len(ours) == len(theirs)
        for (ts, fr), (raw, meta) in zip(ours, theirs, strict=True):
            assert fr == raw and abs(ts - (meta.sec + meta.usec / 1e6)) < 1e-6


def test_pcapng_written_by_scapy(tmp_path: Path, captures: list[Path]) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    frames = list(read_frames(captures[0]))
    pkts = []
    for ts, fr in frames:
        pkt = scapy_all.Raw(fr)
        pkt.time = ts
        pkts.append(pkt)
    path = tmp_path / "s.pcapng"
    with scapy_all.PcapNgWriter(str(path)) as w:
        w.linktype = 127
        for pkt in pkts:
            w.write(pkt)
    src = PcapSource(path)
    assert (src.format, src.linktype) == ("pcapng", 127)
    got = list(src)
    assert [fr for _, fr in got] == [fr for _, fr in frames]
    assert all(abs(a - b) < 1e-6 for (a, _), (b, _) in zip(got, frames, strict=True))


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_by_hand(tmp_path: Path, endian: str) -> None:
    e = endian
    data = b"".join(
        [
            ng_shb(e),
            ng_idb(e, 127),  # default µs
            ng_idb(e, 127, tsresol=9),  # ns
            ng_idb(e, 127, tsresol=0x80 | 10),  # 1/1024 s
            ng_idb(e, 1),  # ethernet: not ours
            ng_block(e, 0x00000BAD, b"custom stuff"),  # unknown: skipped
            ng_epb(e, 0, 1_700_000_000_500_000, b"A" * 13),
            ng_epb(e, 1, 1_700_000_001_250_000_000, b"B" * 3),
            ng_epb(e, 2, 1_700_000_002 * 1024 + 512, b"C" * 7),
            ng_epb(e, 3, 5, b"ether"),
            ng_block(e, 3, struct.pack(e + "I", 5) + b"SIMPL"),  # simple packet block
            ng_epb(e, 9, 5, b"no such interface"),
        ]
    )
    src = PcapSource(write(tmp_path, "h.pcapng", data))
    assert src.linktype == 127
    got = list(src)
    assert [fr for _, fr in got] == [b"A" * 13, b"B" * 3, b"C" * 7, b"SIMPL"]
    assert [round(ts, 6) for ts, _ in got] == [1_700_000_000.5, 1_700_000_001.25, 1_700_000_002.5, 1_700_000_002.5]
    assert src.stats == {
        "frames": 4,
        "bytes": 28,
        "truncated": 0,
        "bad_records": 1,
        "skipped_bytes": 0,
        "skipped_blocks": 1,
        "other_linktype": 1,
        "over_snaplen": 0,
    }


def test_pcapng_sections_switch_byte_order(tmp_path: Path) -> None:
    data = ng_shb("<") + ng_idb("<") + ng_epb("<", 0, 1_000_000, b"le") + ng_shb(">") + ng_idb(">")
    data += ng_epb(">", 0, 2_000_000, b"be")
    assert list(read_frames(write(tmp_path, "m.pcapng", data))) == [(1.0, b"le"), (2.0, b"be")]


def test_truncated_file_yields_complete_records(tmp_path: Path, captures: list[Path]) -> None:
    whole = captures[0].read_bytes()
    n = len(list(read_frames(captures[0])))
    for cut in (len(whole) - 1, len(whole) - 100, 24 + 16 + 3):
        stats: dict[str, int] = {}
        got = list(read_frames(write(tmp_path, "t.pcap", whole[:cut]), stats=stats))
        assert stats["truncated"] == 1 and stats["frames"] == len(got)
        assert 0 <= len(got) < n
    ng = ng_shb("<") + ng_idb("<") + ng_epb("<", 0, 1, b"x" * 40) + ng_epb("<", 0, 2, b"y" * 40)
    src = PcapSource(write(tmp_path, "t.pcapng", ng[:-9]))
    assert [fr for _, fr in src] == [b"x" * 40]
    assert src.stats["truncated"] == 1


def test_corrupt_record_header_with_nothing_valid_after_it(tmp_path: Path, caplog) -> None:
    data = classic("<", False) + struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 10) + b"junk" * 100
    path = write(tmp_path, "c.pcap", data)
    src = PcapSource(path)
    with caplog.at_level(logging.WARNING, logger="footfall.edge_agent.pcapfile"):
        assert len(list(src)) == 5
    assert src.stats["bad_records"] == 1 and src.stats["skipped_bytes"] == 16 + 400
    at = len(classic("<", False))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: corrupt record header (captured length 2147483647 > {MAX_RECORD}) at offset {at}; "
        "no valid record after it, the last 416 bytes are skipped"
    ]


def _corrupt(data: bytes, at: int, incl: int) -> bytes:
    """``data`` with the captured length of the record header at ``at`` replaced."""
    return data[: at + 8] + struct.pack("<I", incl) + data[at + 12 :]


MANY = [(1_700_000_000.0 + i * 0.25, bytes([i % 251]) * (20 + i % 7)) for i in range(60)]


def _offsets(frames) -> list[int]:
    out, off = [], 24
    for _, fr in frames:
        out.append(off)
        off += 16 + len(fr)
    return out


@pytest.mark.parametrize("incl", [0xFFFFFFFF, MAX_RECORD + 1, 70_000, 65_536, 300])
def test_corrupt_record_length_is_reported_and_reading_resyncs(tmp_path: Path, caplog, incl: int) -> None:
    # a length beyond MAX_RECORD, one within it (and beyond the snap length 65535, which is no
    # limit) that runs past the end of the file with records after it, or (300) a plausible one
    # that lands mid-record: the reader finds where the records line up again
    data = classic("<", False, MANY)
    at = _offsets(MANY)[20]
    path = write(tmp_path, "r.pcap", _corrupt(data, at, incl))
    src = PcapSource(path)
    with caplog.at_level(logging.WARNING, logger="footfall.edge_agent.pcapfile"):
        got = list(src)
    assert src.stats["bad_records"] == 1 and src.stats["truncated"] == 0
    frames = [fr for _, fr in got]
    if incl > 65535:
        # exactly the damaged record is lost
        assert frames == [fr for _, fr in MANY[:20] + MANY[21:]]
        assert src.stats["skipped_bytes"] == 16 + len(MANY[20][1])
        (msg,) = [r.getMessage() for r in caplog.records]
        if incl > MAX_RECORD:
            what = f"captured length {incl} > {MAX_RECORD}"
        else:
            what = f"captured length {incl} runs past the end of the file"
        assert msg.startswith(f"{path}: corrupt record header ({what}) at offset {at};")
        assert msg.endswith(f"next valid record at offset {_offsets(MANY)[21]}")
        assert src.stats["over_snaplen"] == 0
    else:
        # the frame read with the wrong length is delivered (the parser judges it), then the
        # records line up again within a few: nothing before the damage or far after it is lost
        assert frames[:20] == [fr for _, fr in MANY[:20]]
        assert frames[-30:] == [fr for _, fr in MANY[-30:]]
        assert len(caplog.records) == 1 and str(path) in caplog.records[0].getMessage()
    assert src.stats["frames"] == len(got)


@pytest.mark.parametrize("chunk", [7, 64, 1 << 16])
def test_records_longer_than_the_snap_length_are_read_counted_and_reported_once(
    tmp_path: Path, caplog, monkeypatch, chunk: int
) -> None:
    # libpcap reads them (its only hard limit is its own maximum), so must we: a writer that
    # does not enforce the snap length it declares loses no frames here. Small read chunks make
    # the long records straddle reads: each is still counted once.
    from footfall.edge_agent import pcapfile

    monkeypatch.setattr(pcapfile, "CHUNK", chunk)
    frames = [(1_700_000_000.0 + i, bytes([i]) * (150 if i in (3, 5) else 100)) for i in range(7)]
    data = bytearray(classic("<", False, frames))
    data[16:20] = struct.pack("<I", 100)  # snap length 100
    path = write(tmp_path, "s.pcap", bytes(data))
    src = PcapSource(path)
    with caplog.at_level(logging.WARNING, logger="footfall.edge_agent.pcapfile"):
        assert list(src) == frames
        assert list(src) == frames  # a second read: the counters and the warning start afresh
    assert src.stats["over_snaplen"] == 2
    assert (src.stats["bad_records"], src.stats["truncated"], src.stats["skipped_bytes"]) == (0, 0, 0)
    msgs = [r.getMessage() for r in caplog.records]
    at = _offsets(frames)[3]
    assert (
        msgs
        == [
            f"{path}: record at offset {at} is 150 bytes, longer than the file's snap length 100; "
            "read anyway, as libpcap does (later ones only counted: over_snaplen)"
        ]
        * 2
    )


def test_a_length_past_max_record_is_corrupt_whatever_the_snap_length(tmp_path: Path) -> None:
    frames = [(1_700_000_000.0 + i, bytes([i]) * 100) for i in range(6)]
    for snaplen in (100, 0, 0x7FFFFFFF):  # small, unset, larger than any frame
        data = bytearray(classic("<", False, frames))
        data[16:20] = struct.pack("<I", snaplen)
        data = _corrupt(bytes(data), _offsets(frames)[3], MAX_RECORD + 1)
        src = PcapSource(write(tmp_path, "m.pcap", data))
        assert [fr[0] for _, fr in src] == [0, 1, 2, 4, 5]
        assert (src.stats["bad_records"], src.stats["over_snaplen"]) == (1, 0)


def test_length_past_the_end_with_records_after_it_is_corrupt_not_a_cut(tmp_path: Path) -> None:
    data = classic("<", False, MANY)
    at = _offsets(MANY)[55]
    src = PcapSource(write(tmp_path, "e.pcap", _corrupt(data, at, 60_000)))
    assert [fr for _, fr in src] == [fr for _, fr in MANY[:55] + MANY[56:]]
    assert (src.stats["bad_records"], src.stats["truncated"]) == (1, 0)


def test_truncated_last_record_is_counted_and_reported(tmp_path: Path, caplog) -> None:
    data = classic("<", False, MANY)
    last = _offsets(MANY)[-1]
    for cut, what in ((last + 16 + 5, f"5 of {len(MANY[-1][1])} bytes"), (last + 9, "9 of its 16 header bytes")):
        path = write(tmp_path, "t.pcap", data[:cut])
        src = PcapSource(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="footfall.edge_agent.pcapfile"):
            assert len(list(src)) == len(MANY) - 1
        assert (src.stats["truncated"], src.stats["bad_records"]) == (1, 0)
        (msg,) = [r.getMessage() for r in caplog.records]
        assert msg.startswith(f"{path}: last record cut short at offset {last} ({what})")


def test_corrupt_record_in_a_real_capture_loses_only_that_record(tmp_path: Path, captures: list[Path]) -> None:
    whole = captures[0].read_bytes()
    frames = list(read_frames(captures[0]))
    offs, off = [], 24
    for _, fr in frames:
        offs.append(off)
        off += 16 + len(fr)
    k = len(frames) // 2
    src = PcapSource(write(tmp_path, "real.pcap", _corrupt(whole, offs[k], 0x00FFFFFF)))
    assert list(src) == frames[:k] + frames[k + 1 :]
    assert src.stats["bad_records"] == 1 and src.stats["skipped_bytes"] == 16 + len(frames[k][1])


def test_pcapng_corrupt_block_length_resyncs_at_the_next_block(tmp_path: Path, caplog) -> None:
    e = "<"
    blocks = [ng_shb(e), ng_idb(e)] + [ng_epb(e, 0, 1_000_000 * (i + 1), bytes([65 + i]) * 9) for i in range(6)]
    at = sum(map(len, blocks[:4]))
    bad = bytearray(blocks[4])
    bad[4:8] = struct.pack(e + "I", 0x7FFFFFF1)  # not a multiple of 4
    data = b"".join(blocks[:4]) + bytes(bad) + b"".join(blocks[5:])
    path = write(tmp_path, "n.pcapng", data)
    src = PcapSource(path)
    with caplog.at_level(logging.WARNING, logger="footfall.edge_agent.pcapfile"):
        assert [fr[0] for _, fr in src] == [65, 66, 68, 69, 70]
    assert src.stats["bad_records"] == 1 and src.stats["skipped_bytes"] == len(blocks[4])
    (msg,) = [r.getMessage() for r in caplog.records]
    assert msg.startswith(f"{path}: corrupt block header (type 0x6, length 2147483633) at offset {at};")


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (classic("<", False, linktype=1), "link type 1 (Ethernet)"),
        (classic(">", True, linktype=228), "link type 228 (unknown)"),
        (
            ng_shb("<") + ng_epb("<", 0, 5, b"x"),
            "a pcapng file without an interface description block, so no link type",
        ),
        (ng_shb("<") + ng_idb("<", 1) + ng_epb("<", 0, 5, b"x"), "link type 1 (Ethernet)"),
    ],
)
def test_unsupported_link_type_is_one_clear_line(tmp_path: Path, data: bytes, found: str) -> None:
    path = write(tmp_path, "l.pcap", data)
    src = PcapSource(path)
    with pytest.raises(PcapError) as err:
        src.require_linktype({127: "802.11 + radiotap", 105: "802.11"})
    msg = str(err.value)
    assert msg.startswith(f"{path}: {found}; supported: 127 (802.11 + radiotap) or 105 (802.11).")
    assert "\n" not in msg
    assert PcapSource(write(tmp_path, "ok.pcap", classic("<", False))).require_linktype({127: "radiotap"}) == 127


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is a text file, not a capture\n", "not a pcap"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "cut short"),
        (bytes(range(256)) * 4, "not a pcap"),
        (b"\n\r\r\n\x1c\x00\x00\x00\xde\xad\xbe\xef" + bytes(16), "byte-order"),
    ],
)
def test_not_a_capture_raises_clear_error(tmp_path: Path, data: bytes, reason: str) -> None:
    path = write(tmp_path, "g.bin", data)
    with pytest.raises(PcapError, match=reason):
        PcapSource(path)
    with pytest.raises(ValueError, match=reason):
        next(read_frames(path))


def test_realtime_replays_at_capture_pace(tmp_path: Path) -> None:
    frames = [(100.0, b"a"), (100.15, b"b"), (100.3, b"c")]
    path = tmp_path / "r.pcap"
    write_pcap(path, frames)
    t0 = time.monotonic()
    arrivals = []
    for _ts, _ in PcapSource(path, realtime=True):
        arrivals.append(time.monotonic() - t0)
    assert arrivals[2] >= 0.29
    assert arrivals[1] >= 0.14
    assert arrivals[2] < 5  # paced, not stuck
    t0 = time.monotonic()
    list(PcapSource(path))
    assert time.monotonic() - t0 < 0.25


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 22])
def test_records_straddling_read_chunks(tmp_path: Path, captures: list[Path], monkeypatch, chunk: int) -> None:
    from footfall.edge_agent import pcapfile

    expected = list(read_frames(captures[1]))
    ng = ng_shb(">") + ng_idb(">") + b"".join(ng_epb(">", 0, int(ts * 1e6), fr) for ts, fr in expected)
    ng_path = write(tmp_path, "c.pcapng", ng)
    monkeypatch.setattr(pcapfile, "CHUNK", chunk)
    for path in (captures[1], ng_path):
        src = PcapSource(path)
        got = list(src)
        assert [fr for _, fr in got] == [fr for _, fr in expected]
        assert all(abs(a - b) < 1e-6 for (a, _), (b, _) in zip(got, expected, strict=True))
        assert src.stats["frames"] == len(expected) and src.stats["truncated"] == 0
        assert src.stats["bytes"] == sum(len(fr) for _, fr in expected)


def test_stats_count_what_was_delivered_when_the_consumer_stops(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    write_pcap(path, FRAMES)
    stats: dict[str, int] = {}
    it = read_frames(path, stats=stats)
    for _ in range(3):
        next(it)
    it.close()
    assert stats["frames"] == 3
    assert stats["bytes"] == sum(len(fr) for _, fr in FRAMES[:3])


def test_close_ends_iteration_even_mid_pacing(tmp_path: Path) -> None:
    path = tmp_path / "slow.pcap"
    write_pcap(path, [(0.0, b"a"), (0.1, b"b"), (30.0, b"c")])
    src = PcapSource(path, realtime=True)
    got: list[bytes] = []

    def consume() -> None:
        got.extend(fr for _, fr in src)

    t = threading.Thread(target=consume)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.3)
    src.close()  # from another thread, while the replay waits 30 s for its next frame
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 5
    assert got == [b"a", b"b"]
    assert list(src) == []
    with PcapSource(path) as again:
        it = iter(again)
        assert next(it)[1] == b"a"
    assert list(it) == []  # closed by the with block


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), keep=st.integers(0, 400), ng=st.booleans())
def test_damaged_files_never_crash(tmp_path_factory, data: bytes, keep: int, ng: bool) -> None:
    """Any bytes after a valid start: frames or counters or PcapError, nothing else."""
    head = (ng_shb("<") + ng_idb("<") + ng_epb("<", 0, 5, b"ok")) if ng else classic("<", False)
    path = tmp_path_factory.mktemp("fuzz") / "f.bin"
    path.write_bytes((head + data)[:keep] if keep < len(head) + len(data) else head + data)
    try:
        src = PcapSource(path)
    except PcapError:
        return
    frames = list(src)
    assert src.stats["frames"] == len(frames)
