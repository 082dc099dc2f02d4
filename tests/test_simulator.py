"""The shop simulator: reproducible bytes, frames real tools dissect, a ground truth that adds up."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import struct
import zlib
from collections import defaultdict
from pathlib import Path

import pytest

from footfall.cli import main
from footfall.tools.simulator import load_groundtruth, make_frames, radio, scanning, simulate_day
from footfall.tools.simulator.captures import measure as measure_captures
from footfall.tools.simulator.devices import Device, pick_policy
from footfall.tools.simulator.frames import write_pcap
from footfall.tools.simulator.macs import OUIS, random_la_mac
from footfall.tools.simulator.people import DWELL_CLASSES, Person
from footfall.tools.simulator.phones import MODELS, PHONE_MODELS
from footfall.tools.simulator.radio import Sensor, channel_freq

SCALE = 0.2  # ~300 passers-by, 60 visitors: a second or so


def read_pcap(path: Path) -> list[tuple[int, bytes]]:
    """Plain struct reader: (timestamp in microseconds, frame) records of a classic pcap."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4 and linktype == 127
    out, off = [], 24
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig
        out.append((sec * 1_000_000 + usec, data[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return out


def mac_of(frame: bytes) -> str:
    return frame[15 + 10 : 15 + 16].hex(":")


def seq_of(frame: bytes) -> int:
    return struct.unpack_from("<H", frame, 15 + 22)[0] >> 4


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim")
    gt = simulate_day(out, seed=7, scale=SCALE)
    return out, gt


def test_same_seed_same_bytes(tmp_path: Path, day: tuple[Path, dict]) -> None:
    out, _ = day
    again = tmp_path / "again"
    simulate_day(again, seed=7, scale=SCALE)
    for name in ("s1.pcap", "s2.pcap", "groundtruth.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = tmp_path / "other"
    simulate_day(other, seed=8, scale=SCALE)
    assert (other / "s1.pcap").read_bytes() != (out / "s1.pcap").read_bytes()


def test_frames_are_valid_probe_requests(day: tuple[Path, dict]) -> None:
    out, gt = day
    known = {m["mac"] for p in gt["people"] for m in p["macs"]}
    for sensor in gt["sensors"]:
        records = read_pcap(out / f"{sensor['id']}.pcap")
        assert len(records) == gt["summary"]["frames"][sensor["id"]] > 1000
        assert [ts for ts, _ in records] == sorted(ts for ts, _ in records)
        for _, f in records:
            assert f[:9] == b"\x00\x00\x0f\x00\x2e\x00\x00\x00\x10"  # radiotap with the FCS flag
            assert struct.unpack_from("<H", f, 10)[0] == channel_freq(sensor["channel"])
            assert f[15:17] == b"\x40\x00"  # probe request
            assert zlib.crc32(f[15:-4]).to_bytes(4, "little") == f[-4:]
            assert mac_of(f) in known
            off = 39
            while off < len(f) - 4:  # elements tile the body exactly up to the FCS
                off += 2 + f[off + 1]
            assert off == len(f) - 4
    scapy = pytest.importorskip("scapy.all")
    # Frames differ only in MAC, sequence number, RSSI and FCS beyond their information elements;
    # scapy needs ~7 ms a frame, so it dissects one frame per distinct IE body.
    distinct = {}
    for sensor in gt["sensors"]:
        distinct.update({f[39:-4]: (sensor, f) for _, f in read_pcap(out / f"{sensor['id']}.pcap")})
    assert len(distinct) > 50  # many models, channels and SSIDs
    for sensor, f in distinct.values():
        pkt = scapy.RadioTap(f)
        assert pkt.haslayer(scapy.Dot11FCS) and pkt.haslayer(scapy.Dot11ProbeReq)
        d11 = pkt[scapy.Dot11FCS]
        assert (d11.type, d11.subtype) == (0, 4)
        assert d11.addr1 == d11.addr3 == "ff:ff:ff:ff:ff:ff"
        assert d11.addr2 == mac_of(f) and seq_of(f) == d11.SC >> 4
        assert pkt.Flags.FCS and pkt.ChannelFrequency == channel_freq(sensor["channel"])
        assert -100 < pkt.dBm_AntSignal < 0
        elt = pkt[scapy.Dot11Elt]
        assert elt.ID == 0  # SSID comes first
        ds = pkt[scapy.Dot11EltDSSSet].channel
        assert abs(ds - sensor["channel"]) <= 4  # heard on its own or an overlapping channel
        assert not pkt.haslayer(scapy.Raw) and not pkt.haslayer(scapy.Padding)


def test_ie_layouts_match_real_captures(captures: list[Path]) -> None:
    scapy = pytest.importorskip("scapy.all")
    pairs = {
        "iPhone12-M": "iPhone 12 (iOS 16)",
        "iPhone11-B": "iPhone 11 (iOS 16)",
        "iPhone7-F": "iPhone 7 (iOS 15)",
        "iPhoneXR-L": "iPhone XR (iOS 16)",
        "S21Ultra-M": "Galaxy S21 Ultra (Android 13)",
        "OppoFindX3Neo-A": "Oppo Find X3 Neo (Android 13)",
    }
    for path in captures:
        name = path.name.split("_")[0]
        if name not in pairs:
            continue
        pkt = next(p for p in scapy.rdpcap(str(path), count=50) if len(p[scapy.Dot11Elt].info) == 0)
        real = bytes(pkt)[15 + 24 : -4]  # elements: after radiotap and the 802.11 header, before the FCS
        channel = pkt[scapy.Dot11EltDSSSet].channel
        assert MODELS[pairs[name]].body(channel) == real, name


def test_mac_rotation(day: tuple[Path, dict]) -> None:
    _, gt = day
    visitors = [p for p in gt["people"] if p["kind"] == "visitor" and p["wifi"] and p["dwell_s"] > 1200]
    randomized = [p for p in visitors if p["randomized"]]
    assert randomized and all(len(p["macs"]) >= 2 for p in randomized)
    assert statistics.mean(len(p["macs"]) for p in randomized) > 4
    for p in gt["people"]:
        if p["model"] == "Galaxy J5 (Android 8)":
            assert not p["randomized"]  # pre-Android-10: burned-in MAC
        first_octets = [int(m["mac"][:2], 16) for m in p["macs"]]
        if p["randomized"]:
            assert all(o & 0x02 and not o & 0x01 for o in first_octets)  # locally administered unicast
        else:
            assert len(p["macs"]) <= 1
            assert all(not o & 0x02 for o in first_octets)
            if p["macs"]:
                oui = p["macs"][0]["mac"][:8].upper()
                assert any(oui in ouis for ouis in OUIS.values())
        for a, b in itertools.pairwise(p["macs"]):
            assert a["from_ts"] <= a["to_ts"] <= b["from_ts"]
    drawn = {p["mac_policy"] for p in gt["people"] if p["randomized"]}
    assert drawn <= RANDOM_POLICIES and {"ios_per_burst", "android_per_scan"} <= drawn
    assert gt["params"]["truth_model"] == 3


# Truth model 2: the policy of a randomizing phone follows its model, as in the real captures.
RANDOM_POLICIES = {"ios_per_burst", "ios_per_scan", "ios_per_scan_seq", "android_per_scan"}
EXPECTED_POLICY = {
    "iPhone 15 (iOS 17)": "ios_per_burst",
    "iPhone 13 (iOS 17)": "ios_per_burst",
    "iPhone 12 (iOS 16)": "ios_per_burst",
    "iPhone 12 Pro (iOS 16)": "ios_per_burst",
    "iPhone 11 (iOS 16)": "ios_per_burst",
    "iPhone XR (iOS 16)": "ios_per_scan",
    "iPhone 7 (iOS 15)": "ios_per_scan_seq",
    "iPhone 6s (iOS 14)": "ios_per_scan_seq",
}


def test_policies_drawn_by_model(day: tuple[Path, dict]) -> None:
    import random

    rng = random.Random(1)
    for m in PHONE_MODELS:
        want = EXPECTED_POLICY.get(m.name, "android_per_scan" if m.can_randomize else "global")
        assert {pick_policy(rng, m, True) for _ in range(50)} == {want}, m.name
        assert pick_policy(rng, m, False) == "global"
    _, gt = day
    for p in gt["people"]:
        if p["randomized"]:
            assert p["mac_policy"] == EXPECTED_POLICY.get(p["model"], "android_per_scan"), p["model"]
    with pytest.raises(ValueError):  # truth model 1's unsourced policies are gone
        Device(MODELS["iPhone 15 (iOS 17)"], "ios_interval", random.Random(1), random_la_mac(random.Random(2)))


def scan_frames(model: str, policy: str, scans: int, full: bool = True, seed: int = 3) -> list[list[tuple]]:
    """Frames of ``scans`` scans 30 s apart, as three sniffers on channels 1, 6, 11 next to the phone
    capture them (the real captures' setup), de-duplicated by (MAC, sequence number):
    per scan, [(t_us, mac, seq, ds_channel)] in time order."""
    import random

    sensors = [Sensor(f"c{ch}", 0.0, 0.0, ch) for ch in (1, 6, 11)]
    day = scanning.DayCapture(sensors)
    dev = Device(MODELS[model], policy, random.Random(seed), random_la_mac(random.Random(seed + 1)))
    p = Person("x", "x", "visitor", 0, dev.model, dev, 0.0, 1e6, (0.0, 1e6), 0.1)
    p.add(0.0, 0.5, 0.5)
    rng = random.Random(seed + 2)
    out = []
    for i in range(scans):
        t0 = 1000.0 + 30.0 * i
        n0 = [len(f) for f in day.frames]
        scanning._scan(day, p, dev, rng, t0, full, (0.0, 1e9))
        seen = {}
        for si, frames in enumerate(day.frames):
            for ts, f in frames[n0[si] :]:
                body = f[15 + 24 : -4]
                ds = body[body.index(b"\x03\x01") + 2]  # DS parameter set follows SSID and rates
                seen.setdefault((mac_of(f), seq_of(f)), (ts, mac_of(f), seq_of(f), ds))
        out.append(sorted(seen.values()))
    return out


def seq_step(a: int, b: int) -> int:
    return (b - a) % 4096


def test_ios_per_burst_changes_mac_and_seq_between_channels() -> None:
    """iPhone 11/12 on iOS 16.4.1 (captures): a new MAC and a random counter for every channel burst."""
    changes = jumps = 0
    for frames in scan_frames("iPhone 11 (iOS 16)", "ios_per_burst", 20):
        assert len({ds for *_, ds in frames}) == 13  # a full sweep, every channel heard
        by_mac = defaultdict(list)
        for _, mac, seq, ds in frames:
            by_mac[mac].append((seq, ds))
        for mac, fs in by_mac.items():
            assert len({ds for _, ds in fs}) == 1, mac  # one MAC: one channel
            seqs = sorted(q for q, _ in fs)
            assert all(seq_step(a, b) == 1 for a, b in itertools.pairwise(seqs))  # counts within a burst
        for a, b in itertools.pairwise(frames):
            if a[3] != b[3]:  # channel transition inside one scan
                changes += 1
                assert a[1] != b[1]
                jumps += seq_step(a[2], b[2]) > 16
    assert changes >= 20 * 12 and jumps / changes > 0.95  # captures: 98-100 % fresh sequence numbers
    mac_life = [
        (max(t) - min(t)) / 1e6
        for frames in scan_frames("iPhone 15 (iOS 17)", "ios_per_burst", 20)
        for t in [[ts for ts, m, *_ in frames if m == mac] for mac in {m for _, m, *_ in frames}]
    ]
    assert max(mac_life) < 0.1  # captures: no MAC lives longer than 0.1 s


def test_ios_per_scan_seq_counter_continues_across_macs() -> None:
    """iPhone 7 on iOS 15.5 (captures): one MAC per scan, the counter continues (34 of 34 changes)."""
    scans = scan_frames("iPhone 7 (iOS 15)", "ios_per_scan_seq", 20)
    macs = [{mac for _, mac, *_ in frames} for frames in scans]
    assert all(len(m) == 1 for m in macs) and len(set().union(*macs)) == 20
    for a, b in itertools.pairwise(scans):
        assert 1 <= seq_step(a[-1][2], b[0][2]) <= 8  # only the frames nobody heard in between


def test_per_scan_policies_one_mac_per_scan_random_seq() -> None:
    """Galaxy S21 / Oppo (Android 13) and iPhone XR (captures): a new MAC and a random counter per scan."""
    for model, policy in (
        ("Galaxy S21 Ultra (Android 13)", "android_per_scan"),
        ("Oppo Find X3 Neo (Android 13)", "android_per_scan"),
        ("iPhone XR (iOS 16)", "ios_per_scan"),
    ):
        for full in (True, False):
            scans = scan_frames(model, policy, 20, full=full)
            macs = [{mac for _, mac, *_ in frames} for frames in scans]
            assert all(len(m) == 1 for m in macs) and len(set().union(*macs)) == 20, model
            jumps = sum(seq_step(a[-1][2], b[0][2]) > 16 for a, b in itertools.pairwise(scans))
            assert jumps >= 18, model


def test_no_drawn_random_mac_outlives_a_scan(day: tuple[Path, dict]) -> None:
    out, gt = day
    for p in gt["people"]:
        if not p["randomized"]:
            continue
        assert len({m["mac"] for m in p["macs"]}) == len(p["macs"])  # never reused
        for m in p["macs"]:
            # the longest scan (13 channels x 4 rounds x 6 SSIDs) takes ~1.6 s; scans start >= 2 s apart
            assert m["to_ts"] - m["from_ts"] < 1.8, p["mac_policy"]
            if p["mac_policy"] == "ios_per_burst":
                assert m["to_ts"] - m["from_ts"] < 0.1
    for sensor in gt["sensors"]:
        span: dict[str, list[int]] = {}
        for ts, f in read_pcap(out / f"{sensor['id']}.pcap"):
            if int(mac_of(f)[:2], 16) & 0x02:
                span.setdefault(mac_of(f), [ts, ts])[1] = ts
        assert max(b - a for a, b in span.values()) < 1_800_000


def test_partial_scans_per_os() -> None:
    """Partial scans (captures): iOS 1/6/11 (+13 or 12) at ~45 ms per channel (25 ms with one frame
    per channel), the Galaxy S21 1/6/11 at ~230 ms per channel."""
    ios = scan_frames("iPhone 12 (iOS 16)", "ios_per_burst", 600, full=False)
    chans = [list(dict.fromkeys(f[3] for f in frames)) for frames in ios]  # channels in order
    assert sum(c[:3] == [1, 6, 11] for c in chans) > 0.95 * len(chans)  # (a lost single frame drops one)
    assert all(c == sorted(c) and set(c) <= {1, 6, 11, 12, 13} and not {12, 13} <= set(c) for c in chans)
    n13 = sum(c[3:] == [13] for c in chans) / len(chans)
    n12 = sum(c[3:] == [12] for c in chans) / len(chans)
    assert abs(n13 - scanning.IOS_PARTIAL_13) < 0.05 and abs(n12 - scanning.IOS_PARTIAL_12) < 0.03

    def steps(frames: list[tuple]) -> list[float]:
        first = {}
        for ts, _, _, ds in frames:
            first.setdefault(ds, ts)
        t = sorted(first.values())
        return [(b - a) / 1000 for a, b in itertools.pairwise(t)]

    ios_steps = [statistics.median(steps(f)) for f in ios]
    single = sum(s < 35 for s in ios_steps) / len(ios_steps)
    assert abs(single - scanning.IOS_SINGLE_FRAME[False]) < 0.05
    assert 24 <= statistics.median(s for s in ios_steps if s < 35) <= 26  # captures: 25 ms
    assert 44 <= statistics.median(s for s in ios_steps if s >= 35) <= 48  # captures: 46 ms
    s21 = scan_frames("Galaxy S21 Ultra (Android 13)", "android_per_scan", 50, full=False)
    android = [statistics.median(steps(f)) for f in s21]
    assert 225 <= statistics.median(android) <= 235  # captures: 231 ms


def test_constants_are_the_captures_measurements(captures: list[Path]) -> None:
    """Every capture-derived number of truth model 2 is what ``captures`` measures in the real data."""
    phones, pool = measure_captures(captures[0].parent)
    by = {p.name: p for p in phones}
    assert (pool["gaps"], pool["cluster_gaps"]) == (328, 80)
    assert round(pool["cluster_share"], 3) == scanning.CLUSTER_SHARE
    assert round(pool["ios_partial_13"], 2) == scanning.IOS_PARTIAL_13
    assert round(pool["ios_partial_12"], 3) == scanning.IOS_PARTIAL_12
    assert round(pool["ios_full_single"], 2) == scanning.IOS_SINGLE_FRAME[True]
    assert round(pool["ios_partial_single"], 2) == scanning.IOS_SINGLE_FRAME[False]
    assert abs(pool["ios_partial_step_ms_double"] / 1000 - scanning.PARTIAL_DWELL_S["ios"]) < 0.002
    assert abs(pool["ios_partial_step_ms_single"] / 1000 - scanning.SINGLE_DWELL_S) < 0.001
    assert abs(pool["ios_full_step_ms"] / 1000 - scanning.CHANNEL_DWELL_S) < 0.001
    assert abs(pool["android_partial_step_ms"] / 1000 - scanning.PARTIAL_DWELL_S["android"]) < 0.002
    # The MAC policies: per burst (iPhone 11, 12), per scan (XR-A, Android), counter kept (iPhone 7).
    for name in ("iPhone11-B", "iPhone11-C", "iPhone11-F", "iPhone11-M", "iPhone12-M"):
        assert by[name].transitions_new_mac >= 0.98 * by[name].transitions
        assert by[name].mac_changes_seq_continues <= 0.02 * by[name].mac_changes
    assert by["iPhoneXR-A"].transitions_new_mac == 0
    assert by["iPhone7-F"].mac_changes_seq_continues == by["iPhone7-F"].mac_changes == 34
    for name in ("S21Ultra-M", "OppoFindX3Neo-A"):
        assert by[name].macs_in_two_scans == 0 and by[name].mac_changes_seq_continues == 0
    assert all(p.macs_in_two_scans == 0 for p in phones if p.name != "iPhone12Pro-C")


def test_scan_cluster_share(captures: list[Path]) -> None:
    """Screen on, after a scan the next follows within 2-10 s as often as 1.5-10 s gaps are in the captures."""
    import random

    measured = measure_captures(captures[0].parent)[1]["cluster_share"]
    on_gaps = []
    prev = None
    for t, on in scanning.scan_schedule(random.Random(5), 0.0, 2e6, 0.5):
        if prev is not None and prev[1]:
            on_gaps.append(t - prev[0])
        prev = (t, on)
    share = sum(1.5 <= g <= 10.0 for g in on_gaps) / len(on_gaps)
    assert len(on_gaps) > 20_000 and abs(share - measured) < 0.02
    assert min(on_gaps) >= 2.0 and max(on_gaps) <= 45.0
    assert not any(10.0 < g < 15.0 for g in on_gaps)


def _still_phone_steps(shadow_rng: int = 7) -> dict[str, float]:
    """The captures' step figures for simulated phones lying still: the radio model's shadowing
    and fast fading, two frames a scan on the sniffer's channel, RSSI in whole dB as radiotap
    gives it, a scan every 30 s."""
    import random

    from footfall.tools.simulator import captures as cap

    rng = random.Random(shadow_rng)
    levels = []
    for _ in range(300):
        shadow = radio.Shadow(rng, 1, 0.0, 0.0)
        scans = []
        for k in range(50):
            level = -60.0 + shadow.draw(rng, 0.0, 0.0)[0]
            frames = [round(level + rng.gauss(0.0, radio.FAST_SIGMA)) for _ in range(2)]
            scans.append((30.0 * k, statistics.fmean(frames)))
        levels.append(scans)
    return cap.step_figures(cap.rssi_steps(levels))


def test_still_phone_signal_like_the_captures(captures: list[Path]) -> None:
    """Truth model 3: a phone at rest keeps its level (most scans within 1 dB), with the captures'
    share of big jumps and of jumps that come back at the next scan."""
    measured = measure_captures(captures[0].parent)[1]
    assert measured["rssi_steps"] > 700
    sim = _still_phone_steps()
    assert abs(sim["rssi_step_within_1db"] - measured["rssi_step_within_1db"]) < 0.08
    assert abs(sim["rssi_step_5db_or_more"] - measured["rssi_step_5db_or_more"]) < 0.03
    assert abs(sim["rssi_jump_comes_back"] - measured["rssi_jump_comes_back"]) < 0.08


def test_shadowing_follows_the_walk() -> None:
    """Standing still the level is kept between scans; after walking 30 m it is a fresh draw."""
    import random

    rng = random.Random(3)
    still, walked = [], []
    for _ in range(4000):
        shadow = radio.Shadow(rng, 1, 0.0, 0.0)
        a = shadow.levels[0]
        still.append((shadow.draw(rng, 0.0, 0.0)[0] - a) ** 2)
        shadow = radio.Shadow(rng, 1, 0.0, 0.0)
        a = shadow.levels[0]
        walked.append((shadow.draw(rng, 30.0, 0.0)[0] - a) ** 2)
    # Fresh draws differ by 4 * sqrt(2) dB RMS; a still phone only by its shifts and transients.
    assert math.sqrt(statistics.fmean(walked)) > 5.0
    assert math.sqrt(statistics.fmean(still)) < 4.0
    assert statistics.median(still) < 0.01


def test_passersby_weaker_than_visitors_at_the_back(day: tuple[Path, dict]) -> None:
    _, gt = day
    kind = {p["id"]: p["kind"] for p in gt["people"]}
    rssi = defaultdict(list)
    for e in gt["expected"]["s2"]:
        rssi[kind[e["person"]]].append(e["rssi_mean"])
    assert statistics.median(rssi["passerby"]) + 10 < statistics.median(rssi["visitor"])
    assert statistics.median(rssi["passerby"]) < -80
    # The entrance sensor hears the street better than the back one.
    front = [e["rssi_mean"] for e in gt["expected"]["s1"] if kind[e["person"]] == "passerby"]
    assert statistics.median(front) > statistics.median(rssi["passerby"]) + 5


def test_staff_span_the_day(day: tuple[Path, dict]) -> None:
    _, gt = day
    d = gt["days"][0]
    staff = [p for p in gt["people"] if p["kind"] == "staff"]
    assert staff
    for p in staff:
        a, b = p["inside"]
        assert 8 * 3600 <= b - a <= 10 * 3600 + 1
        assert not p["randomized"] and len(p["macs"]) == 1
        seen = [e for e in gt["expected"]["s2"] if e["person"] == p["id"]]
        assert len(seen) == 1 and seen[0]["last_ts"] - seen[0]["first_ts"] > 7 * 3600
    assert min(p["inside"][0] for p in staff) <= d["open"] or len(staff) == 1
    fixed = [p for p in gt["people"] if p["kind"] == "fixed"]
    assert len(fixed) == 2 and all(len(p["macs"]) == 1 for p in fixed)


def test_counts_follow_parameters(day: tuple[Path, dict]) -> None:
    _, gt = day
    s = gt["summary"]
    assert s["passersby"] == round(1500 * SCALE) and s["visitors"] == round(300 * SCALE)
    assert s["staff"] == 1 and s["fixed"] == 2
    assert s["unique_people"] == len(gt["people"]) == s["passersby"] + s["visitors"] + s["staff"] + s["fixed"]
    phones = [p for p in gt["people"] if p["kind"] in ("passerby", "visitor") and p["wifi"]]
    share = sum(p["randomized"] for p in phones) / len(phones)
    assert 0.72 < share < 0.88
    assert s["distinct_macs"] == len({m["mac"] for p in gt["people"] for m in p["macs"]})
    d = gt["days"][0]
    for p in gt["people"]:
        if p["kind"] == "passerby":
            assert p["inside"] is None and p["dwell_s"] == 0 and 10 <= p["leave"] - p["arrive"] <= 60
        if p["kind"] == "visitor":
            assert d["open"] <= p["inside"][0] < d["close"] and p["dwell_s"] >= 60
    # Arrivals peak at lunch and in the evening, not at opening.
    hours = [int((p["inside"][0] - d["open"]) // 3600) + 10 for p in gt["people"] if p["kind"] == "visitor"]
    assert hours.count(18) + hours.count(13) > hours.count(10) + hours.count(15)


def test_expected_matches_pcaps(day: tuple[Path, dict]) -> None:
    out, gt = day
    for sensor in gt["sensors"]:
        per_mac: dict[str, list] = {}
        for ts, f in read_pcap(out / f"{sensor['id']}.pcap"):
            e = per_mac.setdefault(mac_of(f), [ts, ts, 0])
            e[1] = ts
            e[2] += 1
        exp = {e["mac"]: e for e in gt["expected"][sensor["id"]]}
        assert set(exp) == set(per_mac)
        for mac, (first, last, n) in per_mac.items():
            e = exp[mac]
            assert (round(e["first_ts"] * 1e6), round(e["last_ts"] * 1e6), e["frames"]) == (first, last, n)
    kinds = {p["id"]: p for p in gt["people"]}
    for e in gt["expected"]["s1"]:
        p = kinds[e["person"]]
        assert e["mac"] in {m["mac"] for m in p["macs"]}
        assert p["arrive"] - 1 <= e["first_ts"] <= e["last_ts"] <= p["leave"] + 1


def test_returning_customers_across_days(tmp_path: Path) -> None:
    gt = simulate_day(tmp_path, seed=3, scale=0.05, days=2, randomized_share=0.5)
    assert len(gt["days"]) == 2
    day2 = [p for p in gt["people"] if p["day"] == 1 and p["kind"] == "visitor"]
    returning = [p for p in day2 if p["returning"]]
    assert returning and len(returning) == round(0.25 * 15)
    first = {p["person"]: p for p in gt["people"] if p["day"] == 0}
    for p in returning:
        assert p["person"] in first and p["id"] != first[p["person"]]["id"]
        assert p["model"] == first[p["person"]]["model"]
        if not p["randomized"] and p["macs"] and first[p["person"]]["macs"]:
            assert p["macs"][0]["mac"] == first[p["person"]]["macs"][0]["mac"]
    assert gt["summary"]["unique_people"] < len(gt["people"])
    records = read_pcap(tmp_path / "s1.pcap")
    assert [ts for ts, _ in records] == sorted(ts for ts, _ in records)
    assert records[-1][0] / 1e6 > gt["days"][1]["open"]


def test_dwell_scale_stretches_the_visits(tmp_path: Path, day: tuple[Path, dict]) -> None:
    """As many visitors, inside about ``dwell_scale`` times as long (until closing time; a longer
    visit walks more of the shop, so the draws after it differ); the default leaves the ground
    truth as it was (test_same_seed_same_bytes)."""
    _, gt = day
    longer = simulate_day(tmp_path, seed=7, scale=SCALE, dwell_scale=2.0)
    assert longer["params"]["dwell_scale"] == 2.0 and "dwell_scale" not in gt["params"]
    before = [p["dwell_s"] for p in gt["people"] if p["kind"] == "visitor"]
    after = [p for p in longer["people"] if p["kind"] == "visitor"]
    assert len(after) == len(before)
    close = longer["days"][0]["close"]
    bounds = {name: (lo, hi) for name, _, lo, hi in DWELL_CLASSES}
    for p in after:
        lo, hi = bounds[p["dwell_class"]]
        capped = p["inside"][1] >= close + 600.0 - 1e-3
        assert capped or 2 * lo - 1e-3 <= p["dwell_s"] <= 2 * hi + 1e-3
        assert p["inside"][1] <= close + 600.0 + 1e-3
    assert max(p["dwell_s"] for p in after) > 3600.0 * 1.5  # the longest class, stretched
    with pytest.raises(ValueError, match="dwell_scale"):
        simulate_day(tmp_path / "bad", seed=7, scale=SCALE, dwell_scale=0.0)


def test_dwell_shape_mixes_the_classes_otherwise(tmp_path: Path, day: tuple[Path, dict]) -> None:
    """``dwell_shape``: the same classes in other shares (people.DWELL_SHAPES), so that the
    median's assumed ratio to the mean is tested; the default leaves the ground truth as it was."""
    import random
    import statistics

    from footfall.tools.simulator.people import DWELL_SHAPES, pick_dwell

    ratios = {}
    for shape in DWELL_SHAPES:
        rng = random.Random(1)
        d = [pick_dwell(rng, shape)[1] for _ in range(20_000)]
        ratios[shape] = statistics.median(d) / statistics.mean(d)
    assert ratios["skewed"] < 0.35 < ratios["shop"] < 0.65 < ratios["alike"]
    _, gt = day
    alike = simulate_day(tmp_path, seed=7, scale=SCALE, dwell_shape="alike")
    assert alike["params"]["dwell_shape"] == "alike" and "dwell_shape" not in gt["params"]
    classes = [p["dwell_class"] for p in alike["people"] if p["kind"] == "visitor"]
    assert classes.count("browse") > 0.5 * len(classes) and "very-long" not in classes
    with pytest.raises(ValueError, match="dwell_shape"):
        simulate_day(tmp_path / "bad", seed=7, scale=SCALE, dwell_shape="round")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["simulate", "--out", str(out), "--scale", "0.05", "--sensors", "3", "--hours", "9:30-20", "--seed", "2"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "people" in line and "s3=" in line and "distinct MACs" in line
    gt = load_groundtruth(out)
    assert [s["id"] for s in gt["sensors"]] == ["s1", "s2", "s3"] and gt["hours"] == [9.5, 20.0]
    assert json.loads((out / "groundtruth.json").read_text())["site"] == "demo"
    assert main(["simulate", "--out", str(out), "--hours", "21-10"]) == 2
    assert "opening hours" in capsys.readouterr().out
    assert main(["simulate", "--out", str(out), "--site", "no/slash"]) == 2
    capsys.readouterr()
    assert main(["simulate", "--out", str(tmp_path / "b"), "--frames", "3000", "--devices", "400"]) == 0
    assert "3000 frames from 400 concurrent devices" in capsys.readouterr().out
    assert len(read_pcap(tmp_path / "b" / "bench.pcap")) == 3000


def test_make_frames(tmp_path: Path) -> None:
    frames = list(make_frames(20_000, seed=5, devices=2_000))
    assert len(frames) == 20_000
    assert [t for t, _ in frames] == sorted(t for t, _ in frames)
    assert len({mac_of(f) for _, f in frames}) > 1_500
    assert all(zlib.crc32(f[15:-4]).to_bytes(4, "little") == f[-4:] for _, f in frames[:2000])
    assert frames == list(make_frames(20_000, seed=5, devices=2_000))
    # The same MAC policies as simulate_day: ios_per_burst phones show one MAC per channel heard,
    # per-scan phones one MAC across the channels of a scan.
    channels = defaultdict(set)
    for _, f in frames:
        body = f[15 + 24 : -4]
        channels[mac_of(f)].add(body[body.index(b"\x03\x01") + 2])
    random_macs = [m for m in channels if int(m[:2], 16) & 0x02]
    one = sum(len(channels[m]) == 1 for m in random_macs) / len(random_macs)
    assert 0.5 < one < 0.95 and any(len(channels[m]) >= 5 for m in random_macs)
    n = write_pcap(tmp_path / "bench.pcap", ((round(t * 1e6), f) for t, f in frames[:100]))
    assert n == 100 and len(read_pcap(tmp_path / "bench.pcap")) == 100


def test_sensors_hear_the_same_frames_at_different_strength(day: tuple[Path, dict]) -> None:
    out, _ = day
    s1 = {(ts, mac_of(f), seq_of(f)): struct.unpack_from("b", f, 14)[0] for ts, f in read_pcap(out / "s1.pcap")}
    s2 = {(ts, mac_of(f), seq_of(f)): struct.unpack_from("b", f, 14)[0] for ts, f in read_pcap(out / "s2.pcap")}
    both = s1.keys() & s2.keys()
    assert len(both) > 0.3 * min(len(s1), len(s2))
    assert sum(s1[k] != s2[k] for k in both) > 0.8 * len(both)
