"""The shop simulator: reproducible bytes, frames real tools dissect, a ground truth that adds up."""

from __future__ import annotations

import itertools
import json
import statistics
import struct
import zlib
from collections import defaultdict
from pathlib import Path

import pytest

from footfall.cli import main
from footfall.tools.simulator import load_groundtruth, make_frames, simulate_day
from footfall.tools.simulator.devices import MODELS, OUIS, Device, random_la_mac
from footfall.tools.simulator.frames import write_pcap
from footfall.tools.simulator.radio import channel_freq

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
    assert {p["mac_policy"] for p in gt["people"] if p["randomized"]} == {
        "ios_interval",
        "ios_per_scan",
        "android_per_scan",
        "android_session",
    }


def test_sequence_numbers_per_policy() -> None:
    import random

    def run(policy: str, model: str) -> list[tuple[bytes, int]]:
        dev = Device(MODELS[model], policy, random.Random(3), random_la_mac(random.Random(4)))
        seen = []
        for i in range(40):
            dev.begin_scan(i * 60.0)
            for _ in range(3):
                seen.append((dev.mac, dev.seq))
                dev.seq = (dev.seq + 1) & 0xFFF
        return seen

    ios = run("ios_interval", "iPhone 15 (iOS 17)")
    assert 3 <= len({m for m, _ in ios}) < 40  # a MAC lasts a few minutes, then changes
    assert all((b - a) % 4096 == 1 for (_, a), (_, b) in itertools.pairwise(ios))  # never reset
    android = run("android_session", "Pixel 8 (Android 14)")
    changes = [b for (ma, _), (mb, b) in itertools.pairwise(android) if ma != mb]
    assert changes and all(s == 0 for s in changes)  # counter restarts with each MAC
    per_scan = run("android_per_scan", "Galaxy S21 Ultra (Android 13)")
    assert len({m for m, _ in per_scan}) == 40
    glob = run("global", "Galaxy J5 (Android 8)")
    assert len({m for m, _ in glob}) == 1


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
    n = write_pcap(tmp_path / "bench.pcap", ((round(t * 1e6), f) for t, f in frames[:100]))
    assert n == 100 and len(read_pcap(tmp_path / "bench.pcap")) == 100


def test_sensors_hear_the_same_frames_at_different_strength(day: tuple[Path, dict]) -> None:
    out, _ = day
    s1 = {(ts, mac_of(f), seq_of(f)): struct.unpack_from("b", f, 14)[0] for ts, f in read_pcap(out / "s1.pcap")}
    s2 = {(ts, mac_of(f), seq_of(f)): struct.unpack_from("b", f, 14)[0] for ts, f in read_pcap(out / "s2.pcap")}
    both = s1.keys() & s2.keys()
    assert len(both) > 0.3 * min(len(s1), len(s2))
    assert sum(s1[k] != s2[k] for k in both) > 0.8 * len(both)
