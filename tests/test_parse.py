"""The struct probe parser against scapy on every real frame, hostile input, and synthetic radiotap."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.edge_agent.parse import MAX_MPDU, Parser, Probe
from footfall.edge_agent.pcapfile import read_frames, write_pcap

scapy_all = pytest.importorskip("scapy.all")
RadioTap = scapy_all.RadioTap
Dot11 = scapy_all.Dot11
Dot11Elt = scapy_all.Dot11Elt


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def scapy_view(frame: bytes) -> dict:
    """The fields we decode, as scapy sees them (full dissection)."""
    p = RadioTap(frame)
    return {**scapy_header(p), **scapy_elements(p.getlayer(Dot11Elt))}


def scapy_header(p) -> dict:
    return {**scapy_radiotap(p[RadioTap]), **scapy_dot11(p[Dot11])}


def scapy_radiotap(rt) -> dict:
    return {
        "rssi": rt.fields.get("dBm_AntSignal"),
        "freq": rt.fields.get("ChannelFrequency"),
        "chan_flags": int(rt.ChannelFlags) if "ChannelFlags" in rt.fields else None,
        "flags": int(rt.Flags) if "Flags" in rt.fields else None,
        "tsft": rt.fields.get("mac_timestamp"),
        "rate": round(rt.fields["Rate"] * 2) if "Rate" in rt.fields else None,
    }


def scapy_dot11(d) -> dict:
    return {
        "da": mac(d.addr1),
        "sa": mac(d.addr2),
        "bssid": mac(d.addr3),
        "seq": d.SC >> 4,
        "frag": d.SC & 15,
    }


def scapy_elements(e) -> dict:
    ids, exts, vendors = [], [], []
    first: dict[int, bytes] = {}
    he = None
    ds = None
    while isinstance(e, Dot11Elt):
        eid = e.fields["ID"]
        content = e.self_build()[2:]
        ids.append(eid)
        first.setdefault(eid, content)
        if eid == 255:
            exts.append(content[0])
            if content[0] == 35 and he is None:
                he = content[1:]
        elif eid == 221:
            vendors.append(e.fields["oui"])
        elif eid == 3 and ds is None:
            ds = e.fields["channel"]
        e = e.payload
    return {
        "ssid": first.get(0, b""),
        "ie_ids": tuple(ids),
        "ext_ids": tuple(exts),
        "ds_channel": ds,
        "rates": first.get(1, b""),
        "ext_rates": first.get(50, b""),
        "ht_cap": first.get(45),
        "vht_cap": first.get(191),
        "ext_cap": first.get(127),
        "he_cap": he,
        "vendor_ouis": tuple(vendors),
    }


class ScapyMemo:
    """scapy's view of a real frame, each part dissected by scapy once per distinct value.

    Full scapy dissection costs milliseconds a frame (radiotap's ~60 conditional fields, the HT
    element's 50); the captures repeat a few hundred radiotap headers and element blobs, so
    every frame is still checked field by field against scapy: its 802.11 header (FCS kept)
    dissected per frame, its radiotap header and element list through scapy's dissection of
    those exact bytes."""

    def __init__(self) -> None:
        self.radiotap: dict[bytes, dict] = {}
        self.elements: dict[bytes, dict] = {}

    def view(self, frame: bytes) -> dict:
        rtlen = int.from_bytes(frame[2:4], "little")
        rt = frame[:rtlen]
        if rt not in self.radiotap:
            self.radiotap[rt] = scapy_radiotap(RadioTap(rt))
        fcs = 4 if self.radiotap[rt]["flags"] & 0x10 else 0
        end = len(frame) - fcs
        dot11 = (scapy_all.Dot11FCS if fcs else Dot11)(frame[rtlen : rtlen + 24] + frame[end:])
        blob = frame[rtlen + 24 : end]
        if blob not in self.elements:
            self.elements[blob] = scapy_elements(Dot11Elt(blob))
        return {**self.radiotap[rt], **scapy_dot11(dot11), **self.elements[blob]}


def ours(p: Probe) -> dict:
    return {
        "da": p.da,
        "sa": p.sa,
        "bssid": p.bssid,
        "seq": p.seq,
        "frag": p.frag,
        "rssi": p.rssi,
        "freq": p.freq,
        "chan_flags": p.chan_flags,
        "flags": p.flags,
        "tsft": p.tsft,
        "rate": p.rate,
        "ssid": p.ssid,
        "ie_ids": p.ie_ids,
        "ext_ids": p.ext_ids,
        "ds_channel": p.ds_channel,
        "rates": p.rates,
        "ext_rates": p.ext_rates,
        "ht_cap": p.ht_cap,
        "vht_cap": p.vht_cap,
        "ext_cap": p.ext_cap,
        "he_cap": p.he_cap,
        "vendor_ouis": tuple(o for o, _ in p.vendors),
    }


def all_frames(captures: list[Path]) -> list[tuple[str, float, bytes]]:
    return [(path.name, ts, fr) for path in captures for ts, fr in read_frames(path)]


@pytest.fixture(scope="module")
def real(captures: list[Path]) -> list[tuple[str, float, bytes]]:
    return all_frames(captures)


def test_every_real_frame_agrees_with_scapy(real: list[tuple[str, float, bytes]]) -> None:
    parser = Parser()
    memo = ScapyMemo()
    assert len(real) > 6000
    for i, (name, ts, frame) in enumerate(real):
        p = parser.parse(frame, ts)
        assert p is not None, name
        assert p.ts == ts
        assert p.fcs and p.ies_complete
        mine = ours(p)
        assert mine == memo.view(frame), name
        if i % 50 == 0:  # and a whole-frame scapy dissection now and then, no shortcuts
            assert mine == scapy_view(frame), name
    assert parser.stats["ok"] == len(real)
    assert parser.total == len(real)


def test_fast_and_general_paths_agree(real: list[tuple[str, float, bytes]]) -> None:
    fast, slow = Parser(), Parser(fast=False)
    for _, ts, frame in real:
        a, b = fast.parse(frame, ts), slow.parse(frame, ts)
        assert ours(a) == ours(b)
        assert (a.fingerprint, a.chain_rssi, a.fcs) == (b.fingerprint, b.chain_rssi, b.fcs)
    assert fast.stats == slow.stats


def test_fingerprint_takes_few_values_per_device(real: list[tuple[str, float, bytes]], capsys) -> None:
    parser = Parser()
    per_file: dict[str, Counter] = defaultdict(Counter)
    for name, ts, frame in real:
        per_file[name][parser.parse(frame, ts).fingerprint] += 1
    with capsys.disabled():
        print("\nfingerprints per capture:", {n.split("_")[0]: len(c) for n, c in per_file.items()})
    for name, counts in per_file.items():
        assert 1 <= len(counts) <= 3, (name, counts)
        assert all(len(fp) == 16 and int(fp, 16) >= 0 for fp in counts)
    # different models / OS versions must not collapse into one fingerprint
    top = {n.split("_")[0]: c.most_common(1)[0][0] for n, c in per_file.items()}
    assert len({top["OppoFindX3Neo-A"], top["S21Ultra-M"], top["iPhone7-F"], top["iPhoneXR-L"], top["iPhone11-B"]}) == 5


def test_fingerprint_ignores_ssid_and_channel() -> None:
    a = probe_frame(ies=ie(0, b"home") + ie(1, b"\x82\x84") + ie(3, b"\x01"))
    b = probe_frame(ies=ie(0, b"office-net") + ie(1, b"\x82\x84") + ie(3, b"\x0b"))
    c = probe_frame(ies=ie(0, b"home") + ie(1, b"\x82\x84\x8b") + ie(3, b"\x01"))
    parser = Parser()
    fa, fb, fc = (parser.parse(f, 0.0).fingerprint for f in (a, b, c))
    assert fa == fb != fc
    # the FILS request counter and the current operating class move per probe as well
    d = probe_frame(ies=ie(0, b"") + ie(59, b"\x51\x51\x73") + ie(255, b"\x02\x00\x17"))
    e = probe_frame(ies=ie(0, b"") + ie(59, b"\x73\x51\x73") + ie(255, b"\x02\x00\x2a"))
    f = probe_frame(ies=ie(0, b"") + ie(59, b"\x73\x51\x74") + ie(255, b"\x02\x00\x2a"))
    pd, pe, pf = (parser.parse(x, 0.0) for x in (d, e, f))
    assert pd.fingerprint == pe.fingerprint != pf.fingerprint
    assert pd.elements is not pe.elements and pd.ext_ids == (2,) and pd.ie_ids == (0, 59, 255)


def test_each_frame_keeps_its_own_ssid_while_elements_are_shared() -> None:
    """The element cache is keyed by the elements after the SSID: phones of one model asking
    for different networks share one decoded list, yet every frame reports its own SSID, on
    both parser paths, and a list without a leading SSID element is never confused with one."""
    tail = ie(1, b"\x82\x84") + ie(3, b"\x01")
    frames = [probe_frame(ies=ie(0, name) + tail) for name in (b"home", b"", b"office-net", b"home")]
    for parser in (Parser(), Parser(fast=False)):
        first = [parser.parse(f, 0.0) for f in frames]  # the first decodes, the rest hit the cache
        probes = first + [parser.parse(f, 0.0) for f in frames]
        assert [p.ssid for p in first] == [b"home", b"", b"office-net", b"home"]
        probes = probes[4:]
        assert [p.ssid for p in probes] == [b"home", b"", b"office-net", b"home"]
        assert len({id(p.elements) for p in probes}) == 1
        assert {p.ie_ids for p in probes} == {(0, 1, 3)}
        bare = parser.parse(probe_frame(ies=tail), 0.0)  # no SSID element: the same tail bytes
        assert bare.ie_ids == (1, 3) and bare.ssid == b"" and bare.elements is not probes[0].elements
        assert parser.parse(frames[0], 0.0).ie_ids == (0, 1, 3)  # and the cache was not poisoned
        # an SSID element running past the end is a damaged list, not a cached tail
        cut = parser.parse(probe_frame(ies=b"\x00\x20home"), 0.0)
        assert cut is not None and not cut.ies_complete


def test_element_caches_are_bounded_in_bytes() -> None:
    """A flood of frames with 2.3 KB of fresh elements each must not grow the caches past
    their byte budget (a count bound let 60,000 such frames take the agent to 400 MB)."""
    import random

    from footfall.edge_agent import parse

    rnd = random.Random(3)
    parser = Parser()
    for _ in range(3000):
        blob = ie(0, b"") + b"".join(ie(221, rnd.randbytes(250)) for _ in range(9))
        assert parser.parse(probe_frame(ies=blob), 0.0) is not None
        for cache in (parser._ies, parser._stable, parser._elements.variants):
            assert cache.used <= cache.budget <= parse.IE_CACHE_BYTES
            assert sum(len(k) for k in cache) <= cache.budget


# ---------------------------------------------------------------------------------------------
# synthetic frames


def ie(eid: int, body: bytes) -> bytes:
    return bytes((eid, len(body))) + body


SA = bytes.fromhex("020000aabbcc")
BCAST = b"\xff" * 6
BASIC_IES = ie(0, b"") + ie(1, b"\x02\x04\x0b\x16") + ie(3, b"\x06") + ie(255, b"\x23\x01\x02")


def dot11(fc0: int = 0x40, fc1: int = 0, sc: int = (1234 << 4) | 3, ies: bytes = BASIC_IES) -> bytes:
    return struct.pack("<BBH6s6s6sH", fc0, fc1, 0, BCAST, SA, BCAST, sc) + ies


def radiotap(words: list[int], fields: bytes) -> bytes:
    hdr_len = 4 + 4 * len(words) + len(fields)
    return struct.pack("<BBH", 0, 0, hdr_len) + b"".join(struct.pack("<I", w) for w in words) + fields


def with_fcs(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


# the layout of the real captures: flags, rate, channel, antenna signal
def probe_frame(ies: bytes = BASIC_IES, flags: int = 0x10, rssi: int = -40) -> bytes:
    rt = radiotap([0x2E], struct.pack("<BBHHb", flags, 2, 2437, 0xA0, rssi))
    body = dot11(ies=ies)
    return rt + (with_fcs(body) if flags & 0x10 else body)


def ext_frame(pad: bytes = b"") -> bytes:
    # Linux mac80211 layout: TSFT, flags, rate, channel, signal, RX flags; then two radiotap
    # namespace words with a per-chain signal and antenna index each
    w0 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 14) | (1 << 29) | (1 << 31)
    w1 = (1 << 5) | (1 << 11) | (1 << 29) | (1 << 31)
    w2 = (1 << 5) | (1 << 11)
    # header is 16 bytes: TSFT at 16 (8-aligned), flags 24, rate 25, channel 26, signal 30,
    # RX flags 32 (2-aligned), chain 0 signal 34 antenna 35, chain 1 signal 36 antenna 37
    fields = struct.pack("<QBBHHbxHbBbB", 0x1122334455667788, 0x10, 12, 5180, 0x140, -45, 0, -47, 0, -49, 1)
    return radiotap([w0, w1, w2], fields + pad) + with_fcs(dot11())


def vendor_frame() -> bytes:
    w0 = (1 << 1) | (1 << 5) | (1 << 30) | (1 << 31)
    w1 = 0b1011 | (1 << 29) | (1 << 31)  # vendor-defined bits: opaque
    w2 = 1 << 5
    # 16-byte header; flags 16, signal 17, vendor header at 18 (2-aligned): OUI, subns, skip 5
    fields = struct.pack("<Bb", 0, -51) + b"\x00\x11\x22" + b"\x01" + struct.pack("<H", 5) + b"VVVVV" + b"\xc8"
    return radiotap([w0, w1, w2], fields) + dot11()


def test_extended_present_words_tsft_alignment_and_chains() -> None:
    frame = ext_frame()
    for parser in (Parser(), Parser(fast=False)):
        for _ in range(2):  # the second goes through the cached/generated layout
            p = parser.parse(frame, 1.5)
            assert p is not None
            assert p.tsft == 0x1122334455667788
            assert (p.flags, p.rate, p.freq, p.chan_flags, p.rssi) == (0x10, 12, 5180, 0x140, -45)
            assert p.chain_rssi == (-47, -49)
            assert p.fcs and p.channel == 36
            assert (p.seq, p.frag, p.sa) == (1234, 3, SA)
            assert p.ie_ids == (0, 1, 3, 255) and p.ext_ids == (35,) and p.ds_channel == 6
        assert parser.stats["ok"] == 2
    # scapy agrees on the first word's fields
    assert scapy_view(frame)["tsft"] == 0x1122334455667788
    assert scapy_view(frame)["rssi"] == -45


def test_tsft_is_aligned_to_8_when_preceded_by_nothing_else() -> None:
    # one present word: header 8 bytes, TSFT at 8 needs no padding; with 2 words (12 bytes) it
    # needs 4 bytes of padding
    frame1 = radiotap([1 | 2], struct.pack("<QB", 7, 0)) + dot11()
    w0 = 1 | 2 | (1 << 29) | (1 << 31)
    frame2 = radiotap([w0, 1 << 5], struct.pack("<4xQBb", 9, 0, -60)) + dot11()
    parser = Parser()
    assert parser.parse(frame1, 0).tsft == 7
    p = parser.parse(frame2, 0)
    assert (p.tsft, p.rssi, p.chain_rssi) == (9, -60, (-60,))


def test_vendor_namespace_is_skipped() -> None:
    frame = vendor_frame()
    for parser in (Parser(), Parser(fast=False)):
        for _ in range(2):
            p = parser.parse(frame, 0)
            assert p is not None
            assert (p.rssi, p.chain_rssi, p.flags) == (-51, (-56,), 0)


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    """tshark's reading of a pcap (one row a frame), or a skip where tshark is not installed."""
    exe = shutil.which("tshark")
    if exe is None:
        pytest.skip("tshark not installed")
    cmd = [exe, "-r", str(path), "-T", "fields", *(x for f in fields for x in ("-e", f))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_fhss_is_two_byte_aligned(tmp_path: Path) -> None:
    # flags at 8, FHSS (u8 hop set, u8 hop pattern; alignment 2 per radiotap.org) at 10, after
    # one pad byte, signal at 12. Aligned to 1, FHSS would sit at 9 and the signal read 7.
    frame = radiotap([(1 << 1) | (1 << 4) | (1 << 5)], struct.pack("<BxBBb", 0, 3, 7, -42)) + dot11()
    for parser in (Parser(), Parser(fast=False)):
        for _ in range(2):
            p = parser.parse(frame, 0.0)
            assert p is not None and (p.flags, p.rssi) == (0, -42)
    path = tmp_path / "fhss.pcap"
    write_pcap(path, [(1.0, frame)])
    assert tshark_fields(path, "radiotap.fhss.hopset", "radiotap.fhss.pattern", "radiotap.dbm_antsignal") == [
        ["3", "7", "-42"]
    ]


# 2.4 GHz, 5 GHz (149-165 included) and 6 GHz frequencies, as the radiotap channel field says
FREQS_24 = (2412, 2437, 2462, 2472, 2484)
FREQS_5 = (5180, 5320, 5500, 5720, 5745, 5765, 5785, 5805, 5825, 5865)
FREQS = FREQS_24 + FREQS_5 + (5955, 5975, 6415, 7115)


def test_channels_agree_with_tshark_and_6ghz_is_its_own_band(tmp_path: Path) -> None:
    frames = [
        (1.0 + k, radiotap([0x2E], struct.pack("<BBHHb", 0, 2, f, 0, -40)) + dot11()) for k, f in enumerate(FREQS)
    ]
    path = tmp_path / "bands.pcap"
    write_pcap(path, frames)
    parser = Parser()
    ours_ = [parser.parse(fr, ts).channel for ts, fr in read_frames(path)]
    rows = tshark_fields(path, "wlan_radio.frequency", "wlan_radio.channel")
    assert [int(f) for f, _ in rows] == list(FREQS)
    # tshark numbers each band's channels from 1; the identifiers keep 6 GHz apart (+1000)
    theirs = [int(c) + (1000 if int(f) > 5925 else 0) for f, c in rows]
    assert ours_ == theirs
    assert ours_[9:14] == [149, 153, 157, 161, 165]
    assert ours_[15:17] == [1001, 1005] and not set(ours_[15:]) & set(ours_[:15])


def test_same_layout_with_trailing_header_padding() -> None:
    # some drivers pad the radiotap header: the same present words, a longer length
    parser = Parser()
    for frame in (ext_frame(), ext_frame(pad=b"\x00" * 6), ext_frame(), ext_frame(pad=b"\x00" * 6)):
        p = parser.parse(frame, 0)
        assert (p.tsft, p.rssi, p.chain_rssi, p.seq) == (0x1122334455667788, -45, (-47, -49), 1234)
    assert parser.stats["ok"] == 4


def test_unknown_field_stops_decoding_but_keeps_earlier_fields() -> None:
    # bit 28 (TLVs) and an undefined bit in an extension word: sizes unknown
    for words, fields in (([(1 << 1) | (1 << 5) | (1 << 28)], b"\x00\xd0\x99\x99"), ([2 | (1 << 31), 1 << 3], b"\x00")):
        frame = radiotap(words, fields) + dot11()
        p = Parser().parse(frame, 0)
        assert p is not None
        assert p.flags == 0
        assert p.rssi in (None, -48)


def test_fcs_flag_strips_and_bad_fcs_is_dropped() -> None:
    parser = Parser()
    p = parser.parse(probe_frame(flags=0x10), 0)
    assert p.fcs and p.ies_complete and p.he_cap == b"\x01\x02"
    assert parser.parse(probe_frame(flags=0x50), 0) is None
    assert parser.stats["bad_fcs"] == 1
    # FCS present but not flagged: the last element runs into it -> kept, marked, counted
    rt = radiotap([0x2E], struct.pack("<BBHHb", 0, 2, 2437, 0xA0, -40))
    frame = rt + dot11(ies=BASIC_IES + b"\xdd\x20") + b"\x01\x02\x03\x04"
    p = parser.parse(frame, 0)
    assert p is not None and not p.ies_complete
    assert p.ie_ids == (0, 1, 3, 255)
    assert parser.stats["bad_ie"] == 1


def test_every_reject_has_its_counter() -> None:
    rt = radiotap([0x2E], struct.pack("<BBHHb", 0, 2, 2437, 0xA0, -40))
    cases = {
        "not_probe": [rt + dot11(fc0=0x80), rt + b"\xd4\x00\x00\x00" + SA],  # beacon, ACK
        "truncated": [rt + dot11()[:20], rt[:10], b"\x00\x00"],
        "oversized": [rt + dot11(ies=ie(221, b"\x00" * 255) * 10)],
        "bad_radiotap": [b"\x01" + rt[1:] + dot11(), b"\x00\x00\x04\x00" + rt[4:] + dot11()],
    }
    for path in ("fast", "slow"):
        parser = Parser(fast=path == "fast")
        parser.parse(probe_frame(flags=0), 0)
        for counter, frames in cases.items():
            for frame in frames:
                before = parser.stats[counter]
                assert parser.parse(frame, 0) is None
                assert parser.stats[counter] == before + 1, (path, counter, frame.hex())
        assert parser.stats["garbage"] == 0
        assert len(dot11(ies=ie(221, b"\x00" * 255) * 10)) > MAX_MPDU


def test_htc_order_bit_skips_ht_control() -> None:
    body = struct.pack("<BBH6s6s6sH", 0x40, 0x80, 0, BCAST, SA, BCAST, 16) + b"HTCF" + BASIC_IES
    p = Parser().parse(radiotap([0x2E], struct.pack("<BBHHb", 0, 2, 2437, 0xA0, -40)) + body, 0)
    assert p is not None and p.ies_complete and p.ie_ids == (0, 1, 3, 255)


def test_raw_80211_linktype() -> None:
    parser = Parser()
    decode = parser.decoder(105)
    p = decode(with_fcs(dot11()), 2.0, fcs=True)
    assert p is not None and p.rssi is None and p.fcs and p.ies_complete and p.seq == 1234
    assert parser.parse_80211(dot11(fc0=0x80), 0) is None
    assert parser.stats == {**parser.stats, "ok": 1, "not_probe": 1}
    with pytest.raises(ValueError):
        parser.decoder(1)


def test_repr_leaks_no_address() -> None:
    p = Parser().parse(probe_frame(), 0)
    text = repr(p)
    assert SA.hex() not in text and "aa:bb:cc" not in text and "aabbcc" not in text


def test_vendor_elements_and_volatile_contents() -> None:
    wps = b"\x00\x50\xf2\x04" + struct.pack(">HH", 0x1047, 16) + bytes(16) + struct.pack(">HH", 0x1011, 3) + b"abc"
    wps2 = b"\x00\x50\xf2\x04" + struct.pack(">HH", 0x1047, 16) + b"\x01" * 16 + struct.pack(">HH", 0x1011, 3) + b"abc"
    base = ie(0, b"") + ie(1, b"\x02\x04")
    parser = Parser()
    a = parser.parse(probe_frame(ies=base + ie(221, wps) + ie(221, b"\x00\x17\xf2")), 0)
    b = parser.parse(probe_frame(ies=base + ie(221, wps2) + ie(221, b"\x00\x17\xf2")), 0)
    assert a.vendors == ((0x0050F2, 4), (0x0017F2, -1))
    assert a.fingerprint == b.fingerprint  # UUID-E differs only


# ---------------------------------------------------------------------------------------------
# hostile input


def check_invariants(parser: Parser, frames: list[bytes]) -> None:
    for i, frame in enumerate(frames):
        before = parser.total
        parser.parse(frame, float(i))
        parser.parse_80211(frame, float(i), fcs=bool(i & 1))
        assert parser.total == before + 2
    assert parser.stats["garbage"] == 0, parser.stats


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=400), max_size=20))
def test_random_bytes_never_raise(frames: list[bytes]) -> None:
    check_invariants(Parser(), frames)


@pytest.fixture(scope="module")
def samples(captures: list[Path]) -> list[bytes]:
    """A few frames per capture (every distinct element layout is enough to mutate)."""
    out = []
    for path in captures:
        frames = [fr for _, fr in read_frames(path)]
        out.extend(frames[:: max(1, len(frames) // 8)])
    out += [probe_frame(), probe_frame(flags=0), ext_frame(), vendor_frame()]
    return out


mutation = st.tuples(st.integers(0, 10_000), st.sampled_from(["flip", "cut", "set", "insert", "grow"]), st.binary())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 10_000), muts=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_real_frames_never_raise_and_paths_agree(samples: list[bytes], which: int, muts: list) -> None:
    frame = bytearray(samples[which % len(samples)])
    for pos, kind, data in muts:
        at = pos % (len(frame) + 1)
        if kind == "flip" and frame:
            frame[at % len(frame)] ^= 1 << (pos % 8)
        elif kind == "cut":
            del frame[at:]
        elif kind == "set":
            frame[at : at + len(data)] = data
        elif kind == "insert":
            frame[at:at] = data
        else:
            frame += data * 20
    frame = bytes(frame)
    fast, slow = Parser(), Parser(fast=False)
    for parser in (fast, slow):
        check_invariants(parser, [frame, frame])  # twice: the second may use the generated decoder
    assert fast.stats == slow.stats
    a, b = fast.parse(frame, 0), slow.parse(frame, 0)
    assert (a is None) == (b is None)
    if a is not None:
        assert ours(a) == ours(b) and a.chain_rssi == b.chain_rssi and a.fingerprint == b.fingerprint


def test_bench_capture_is_all_valid_probes_with_rotating_addresses(tmp_path: Path) -> None:
    from footfall.tools.bench.bench_parse import CAPTURES, make_bench_pcap

    if not (CAPTURES.is_dir() and any(CAPTURES.glob("*.pcap"))):
        pytest.skip("the benchmark is built from the shared real captures (the fallback is tested below)")

    path = tmp_path / "bench.pcap"
    assert make_bench_pcap(path, 16_000) == 16_000
    parser = Parser()
    sas = set()
    for ts, frame in read_frames(path):
        p = parser.parse(frame, ts)
        assert p is not None and p.ies_complete
        rtlen = frame[2] | frame[3] << 8
        assert zlib.crc32(frame[rtlen:-4]) == int.from_bytes(frame[-4:], "little")  # FCS still right
        sas.add(p.sa)
    assert parser.stats["ok"] == 16_000
    assert len(sas) > 1000  # every cycle brings fresh addresses


def test_synthetic_bench_frames_parse() -> None:
    """What the benchmark falls back to in a clone without the shared captures."""
    from footfall.tools.bench.bench_parse import _synthetic_cycle

    parser = Parser()
    probes = [parser.parse(fr, 0.0) for fr in _synthetic_cycle(500)]
    assert parser.stats["ok"] == 500
    assert len({p.fingerprint for p in probes}) == 11  # one per made-up device model


def test_real_mix_frames_are_valid_and_have_the_field_properties(tmp_path: Path) -> None:
    """The throughput benchmark's capture (tools/bench/realmix.py): every frame a valid probe
    with a right FCS, in time order, many addresses, SSIDs of the devices' own, many distinct
    element lists."""
    from footfall.tools.bench.realmix import CAPTURES, describe, make_mix_pcap

    if not (CAPTURES.is_dir() and any(CAPTURES.glob("*.pcap"))):
        pytest.skip("the real mix is built from the shared real captures")
    path = tmp_path / "mix.pcap"
    assert make_mix_pcap(path, 20_000, at_once=500) == 20_000
    parser = Parser()
    last = 0.0
    for ts, frame in read_frames(path):
        p = parser.parse(frame, ts)
        assert p is not None and p.ies_complete and ts >= last
        last = ts
        rtlen = frame[2] | frame[3] << 8
        assert zlib.crc32(frame[rtlen:-4]) == int.from_bytes(frame[-4:], "little")
    d = describe(path)
    assert d["frames"] == 20_000 and d["addresses"] > 1000
    assert 0.4 < d["ssid_share"] < 0.8 and d["distinct_ssids"] > 50
    assert d["distinct_element_lists"] > 1000
