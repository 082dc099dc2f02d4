"""The element caches' shortcuts (edge_agent/elements.py) and the agent's sighting decoders
(Parser.sighting_decoders) give what decoding from scratch gives: warm caches against a cold
parser, on real frames changed where lists change from probe to probe and anywhere else."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.edge_agent.elements import _stable_key
from footfall.edge_agent.parse import Parser, Probe
from footfall.edge_agent.pcapfile import read_frames

FIELDS = [
    "sa",
    "seq",
    "rssi",
    "freq",
    "ssid",
    "ie_ids",
    "ext_ids",
    "ds_channel",
    "rates",
    "ext_rates",
    "ht_cap",
    "vht_cap",
    "he_cap",
    "ext_cap",
    "vendors",
    "fingerprint",
    "ies_complete",
]


def view(p: Probe | None) -> tuple | None:
    return None if p is None else tuple(getattr(p, f) for f in FIELDS)


def ie(eid: int, body: bytes) -> bytes:
    return bytes((eid, len(body))) + body


def frame_of(ies: bytes) -> bytes:
    """A radiotap probe request (flags with FCS, channel, signal) carrying ``ies``."""
    rt = struct.pack("<BBHI", 0, 0, 15, 0x2E) + struct.pack("<BBHHb", 0x10, 2, 2437, 0xA0, -40)
    body = struct.pack("<BBH6s6s6sH", 0x40, 0, 0, b"\xff" * 6, bytes.fromhex("020000aabbcc"), b"\xff" * 6, 16)
    body += ies
    return rt + body + struct.pack("<I", zlib.crc32(body))


WPS = b"\x00\x50\xf2\x04" + struct.pack(">HH", 0x1047, 16) + bytes(16) + struct.pack(">HH", 0x1011, 3) + b"abc"
# every element whose content the fingerprint leaves out, twice where the first one counts
SYNTHETIC = frame_of(
    ie(0, b"home")
    + ie(1, b"\x82\x84\x8b\x96")
    + ie(3, b"\x06")
    + ie(3, b"\x0b")
    + ie(0, b"again")
    + ie(59, b"\x51\x51\x73\x74")
    + ie(45, bytes(range(26)))
    + ie(221, WPS)
    + ie(221, b"\x50\x6f\x9a\x09" + b"\x02\x02\x00\x25\x00")
    + ie(221, b"\x00\x17\xf2\x0a\x00\x01\x04")
    + ie(255, b"\x02\x00\x17")
    + ie(255, b"\x23" + bytes(20))
)


@pytest.fixture(scope="module")
def samples(captures: list[Path]) -> list[bytes]:
    out = []
    for path in captures:
        frames = [fr for _, fr in read_frames(path)]
        out.extend(frames[:: max(1, len(frames) // 12)])
    return [*out, SYNTHETIC]


def elements_span(frame: bytes) -> tuple[int, int]:
    """(start, end) of the element list of a radiotap probe request with FCS (as above)."""
    rtlen = int.from_bytes(frame[2:4], "little")
    return rtlen + 24, len(frame) - 4


def changed(frame: bytes, at: int, value: int) -> bytes:
    """``frame`` with one octet set, its FCS recomputed (the parser does not check it)."""
    f = bytearray(frame)
    f[at] = value
    return bytes(f)


mutation = st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 10_000), muts=st.lists(mutation, min_size=1, max_size=8))
def test_warm_caches_decode_as_a_cold_parser(samples: list[bytes], which: int, muts: list) -> None:
    """Lists like one decoded before: changed inside its cut octets (a variant: channel, FILS
    counter, operating class, WPS UUID-E, P2P, later SSIDs) or anywhere else (a header octet
    changes the structure, and the variant must not be taken then)."""
    frame = samples[which % len(samples)]
    start, end = elements_span(frame)
    cuts = _stable_key(frame[start:end])[4]
    warm = Parser()
    warm.parse(frame, 0.0)  # learns where this length of list has its cuts
    sightings, other = warm.sighting_decoders(127)
    current = frame
    for pos, value, inside in muts:
        if inside and cuts:
            a, b = cuts[pos % len(cuts)]
            at = start + a + pos % (b - a)
        else:
            at = start + pos % (end - start)
        current = changed(current, at, value)
        want = Parser().parse(current, 0.0)
        assert view(warm.parse(current, 0.0)) == view(want)
        seen = sightings.get(current[:8], other)(current, 0.0)
        assert seen == (None if want is None else (want.sa, want.rssi, want.seq, want.freq, seen[4], want.ssid))
        if seen is not None:
            assert view_elements(seen[4]) == view_elements(want.elements)


def view_elements(el) -> tuple:
    return (el.ie_ids, el.ext_ids, el.ds_channel, el.rates, el.ext_rates, el.ht_cap, el.vht_cap, el.he_cap)


def test_variants_are_hit_and_carry_their_own_channel() -> None:
    """Probes that differ only in the channel byte and the FILS counter: decoded once, then
    found as variants, each with its own DS channel and the shared fields."""
    parser = Parser()
    base = ie(0, b"") + ie(1, b"\x82\x84") + ie(3, b"\x01") + ie(45, bytes(26)) + ie(255, b"\x02\x00\x17")
    frames = []
    for ch in (1, 6, 11):
        for counter in (0x17, 0x18):
            ies = base.replace(b"\x03\x01\x01", bytes((3, 1, ch))).replace(b"\x02\x00\x17", bytes((2, 0, counter)))
            frames.append(frame_of(ies))
    probes = [parser.parse(f, 0.0) for f in frames]
    assert [p.ds_channel for p in probes] == [1, 1, 6, 6, 11, 11]
    assert len({p.fingerprint for p in probes}) == 1 and len({id(p.elements.fields) for p in probes}) == 1
    assert len(parser._elements.variants) == 1  # one list decoded, five found by its variant key
    assert [view(p) for p in probes] == [view(Parser().parse(f, 0.0)) for f in frames]


def test_sighting_decoders_agree_with_parse(captures: list[Path]) -> None:
    frames = [(ts, fr) for path in captures for ts, fr in read_frames(path)]
    frames += [(0.0, SYNTHETIC), (0.0, SYNTHETIC[:30]), (0.0, SYNTHETIC[:45]), (0.0, b"\x00" * 5)]
    a, b = Parser(), Parser()
    sightings, other = a.sighting_decoders(127)
    for ts, fr in frames:
        seen, p = sightings.get(fr[:8], other)(fr, ts), b.parse(fr, ts)
        assert (seen is None) == (p is None)
        if p is not None:
            assert seen == (p.sa, p.rssi, p.seq, p.freq, seen[4], p.ssid)
            assert view_elements(seen[4]) == view_elements(p.elements)
    assert a.stats == b.stats
    assert len(sightings) >= 1  # the generated decoders were used, not only the general path
