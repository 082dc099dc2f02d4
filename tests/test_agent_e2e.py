"""The agent end to end: a simulated store day -> agents -> a real Mosquitto -> a subscriber.

What the subscriber receives must match the simulator's ground truth: every MAC a sensor
captured becomes visits covering exactly the frames captured, with the right first/last
timestamps; store-level classification and dwell agree with the people's true behaviour;
no raw MAC is ever on the wire. The fault test stops the broker mid-replay.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from footfall import schema
from footfall.edge_agent.identity import Identifier, format_mac, parse_mac
from footfall.tools.simulator import simulate_day

KEY_HEX = "3c" * 32


class Subscriber:
    """A hub-like persistent-session subscriber that records every payload it gets."""

    def __init__(self, broker, client_id: str = "test-sub") -> None:
        self.raw: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("footfall/#", qos=1)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.raw.append((msg.topic, msg.payload))

    def visits(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p in self.raw if t.endswith("/visit")]

    def wait_visits(self, n: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.visits()
            if len({v["id"] for v in got}) >= n:
                time.sleep(0.3)  # let any stragglers (duplicates) arrive too
                return self.visits()
            time.sleep(0.1)
        return self.visits()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("day")
    truth = simulate_day(out, seed=11, scale=0.4, site="demo")
    return out, truth


def replay(pcap: Path, sensor: str, broker, key_file: Path) -> int:
    """Run the real CLI; returns how many visits it says it published."""
    proc = subprocess.run(
        [sys.executable, "-m", "footfall", "agent", "replay", str(pcap), "--site", "demo", "--sensor", sensor,
         "--broker", f"{broker.host}:{broker.port}", "--hash-key-file", str(key_file)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1].split(", ")[-1].split()[0])


def test_simulated_day_through_mosquitto_matches_ground_truth(day, broker, tmp_path):
    out, truth = day
    key_file = tmp_path / "hash.key"
    key_file.write_text(KEY_HEX)
    sub = Subscriber(broker)
    try:
        published = sum(replay(out / f"{s['id']}.pcap", s["id"], broker, key_file) for s in truth["sensors"])
        received = sub.wait_visits(published)
        raw = list(sub.raw)
    finally:
        sub.close()

    ids = [v["id"] for v in received]
    assert len(set(ids)) == published
    assert len(ids) == len(set(ids)), "QoS-1 duplicates on a healthy broker"
    for v in received:
        schema.validate(schema.dumps(v), "visit")

    # No raw MAC on the wire, in any common spelling, in any message.
    macs = {parse_mac(m["mac"]) for p in truth["people"] for m in p["macs"]}
    spelled = {format_mac(m, style).encode() for m in macs for style in ("colon-lower", "colon-upper", "plain-lower")}
    blob = b"\n".join(p for _, p in raw)
    assert not [s for s in spelled if s in blob]
    # Status, presence and health flowed too.
    kinds = Counter(t.rsplit("/", 1)[1] for t, _ in raw)
    assert kinds["status"] >= 2 and kinds["presence"] > 0 and kinds["health"] > 0

    ident = Identifier(bytes.fromhex(KEY_HEX))
    by_sensor_device: dict[tuple[str, str], list[dict]] = defaultdict(list)
    by_device: dict[str, list[dict]] = defaultdict(list)
    for v in received:
        by_sensor_device[(v["sensor"], v["device"])].append(v)
        by_device[v["device"]].append(v)

    # Every MAC each sensor captured: its visits cover exactly the captured frames.
    for sensor, expected in truth["expected"].items():
        assert expected
        for e in expected:
            vs = by_sensor_device[(sensor, ident.device_id(parse_mac(e["mac"])))]
            assert vs, f"{sensor}: no visit for a captured device of {e['person']}"
            assert min(v["first_seen"] for v in vs) == pytest.approx(e["first_ts"], abs=2e-3)
            assert max(v["last_seen"] for v in vs) == pytest.approx(e["last_ts"], abs=2e-3)
            assert sum(v["sightings"] for v in vs) == e["frames"]
            assert max(v["rssi_max"] for v in vs) == e["rssi_max"]

    # Store-level behaviour, for phones whose MAC identifies them (randomized MACs are the
    # hub's device estimator's job): visitor if any sensor saw a visit.
    outcome: Counter = Counter()
    dwell_ok = dwell_n = 0
    for p in truth["people"]:
        if p["mac_policy"] != "global" or not p["macs"] or p["kind"] not in ("visitor", "passerby"):
            continue
        vs = by_device.get(ident.device_id(parse_mac(p["macs"][0]["mac"])))
        if not vs:
            continue
        said = "visitor" if any(v["class"] == "visitor" for v in vs) else "passerby"
        outcome[(p["kind"], said)] += 1
        if p["kind"] == "visitor":
            dwell = max(v["last_seen"] for v in vs) - min(v["first_seen"] for v in vs)
            dwell_n += 1
            dwell_ok += abs(dwell - p["dwell_s"]) <= max(120.0, 0.25 * p["dwell_s"])
    visitors = outcome[("visitor", "visitor")] + outcome[("visitor", "passerby")]
    passersby = outcome[("passerby", "passerby")] + outcome[("passerby", "visitor")]
    assert visitors >= 5 and passersby >= 10, outcome
    # Misses are short look-ins whose idle phone probed only once or twice (truth model 2: a
    # phone's screen is on an eighth of the time, and an idle phone scans every 1.5-5 min): the
    # agent's rule needs a minute between strong scans. The hub's estimates correct for it
    # (hub/estimate.py); here the agent is held to what it measured (10 of 14 on this day).
    assert outcome[("visitor", "visitor")] / visitors >= 0.6, outcome
    assert outcome[("passerby", "passerby")] / passersby >= 0.95, outcome
    assert dwell_ok / dwell_n >= 0.75  # measured 11 of 14 on this day (truth model 2)
    # Staff and fixed devices: flagged as long stays.
    for p in truth["people"]:
        if p["kind"] in ("staff", "fixed") and p["macs"]:
            vs = by_device.get(ident.device_id(parse_mac(p["macs"][0]["mac"])), [])
            assert any(v["long_stay"] for v in vs), p["id"]


def test_broker_stopped_mid_replay_loses_and_doubles_nothing(day, broker, tmp_path):
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.buffer import DiskBuffer
    from footfall.edge_agent.config import AgentConfig
    from footfall.edge_agent.pcapfile import PcapSource
    from footfall.edge_agent.publish import Publisher

    out, truth = day
    os.environ["FOOTFALL_HASH_KEY"] = KEY_HEX
    sensor = truth["sensors"][0]["id"]
    sub = Subscriber(broker, client_id="fault-sub")
    publisher = Publisher("demo", sensor, broker.host, broker.port, DiskBuffer(tmp_path / "buf.db")).start()
    visits: list[str] = []

    def sink(kind: str, payload: dict) -> None:
        if kind == "visit":
            visits.append(payload["id"])
        publisher.publish(kind, payload)

    try:
        agent = Agent(AgentConfig(site="demo", sensor=sensor), sink)
        frames = iter(PcapSource(out / f"{sensor}.pcap"))
        total = truth["summary"]["frames"][sensor]
        agent.process(itertools.islice(frames, total // 3))
        broker.stop()  # down for the middle third: the agent keeps working into its disk buffer
        agent.process(itertools.islice(frames, total // 3))
        assert publisher.stats()["backlog"] > 0
        broker.start()
        agent.process(frames)
        agent.finish("end_of_capture")
        assert publisher.flush(60), publisher.stats()
        received = sub.wait_visits(len(visits))
    finally:
        publisher.close()
        sub.close()
        os.environ.pop("FOOTFALL_HASH_KEY", None)
    got = [v["id"] for v in received]
    assert len(visits) == len(set(visits)) > 50
    assert set(got) == set(visits), f"lost {len(set(visits) - set(got))}"
    # QoS 1 may redeliver a message whose PUBACK died with the broker; the ids make it
    # droppable, and it must stay rare.
    assert len(got) - len(set(got)) <= 100


# -- replay without a broker: synthetic probe requests -----------------------------------------

_RADIOTAP = bytes.fromhex("00000f002e00000010") + struct.pack("<BHH", 2, 2437, 0xA0)  # flags, rate, channel
_IES = bytes.fromhex("000001040204 0b16 32080c1218243048606c 030106".replace(" ", ""))


def probe(device: int, rssi: int = -55, seq: int = 0) -> bytes:
    """A probe request from a globally administered MAC with an FCS, as a monitor interface gives it."""
    mac = bytes((0x00, 0x1B, 0x63)) + device.to_bytes(3, "big")
    mpdu = b"\x40\x00\x00\x00" + b"\xff" * 6 + mac + b"\xff" * 6 + struct.pack("<H", (seq & 0xFFF) << 4) + _IES
    return _RADIOTAP + bytes((rssi & 0xFF,)) + mpdu + zlib.crc32(mpdu).to_bytes(4, "little")


def run_agent(frames: list[tuple[float, bytes]], **process: Any) -> list[tuple[str, dict]]:
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    sent: list[tuple[str, dict]] = []
    agent = Agent(AgentConfig(site="demo", sensor="s1"), lambda kind, payload: sent.append((kind, payload)))
    agent.process(iter(frames), **process)
    agent.finish("end_of_capture")
    return sent


T0 = 1_700_000_000.0


def test_replay_reports_presence_across_a_silent_stretch(monkeypatch):
    monkeypatch.setenv("FOOTFALL_HASH_KEY", KEY_HEX)
    busy = [(T0 + s + d, probe(d)) for s in range(0, 121, 10) for d in range(3)]
    after = T0 + 120 + 40 * 60  # 40 minutes without a frame
    sent = run_agent([*busy, (after, probe(9))])
    presence = [p for kind, p in sent if kind == "presence"]
    silent = [p for p in presence if T0 + 120 < p["ts"] <= after]
    # What a live sensor sends: a report every minute of the silence, at capture time.
    assert len(silent) == 40
    assert {b["ts"] - a["ts"] for a, b in itertools.pairwise(silent)} == {60.0}
    assert [p["devices"] for p in silent[:2]] == [3, 0] and {p["devices"] for p in silent[1:]} == {0}
    # The visits expired during the silence (a gap_s after their last frame), not at its end.
    order = [(kind, p.get("ts", p.get("last_seen"))) for kind, p in sent]
    closed = [i for i, (kind, _) in enumerate(order) if kind == "visit"][:3]
    before = [ts for kind, ts in order[: closed[0]] if kind == "presence"]
    assert max(before) == T0 + 720 and all(sent[i][1]["closed_by"] == "gap" for i in closed)
    # Live capture ticks on the wall clock instead: no catch-up there.
    quiet = [p for kind, p in run_agent([*busy, (after, probe(9))], catch_up=False) if kind == "presence"]
    assert len([p for p in quiet if T0 + 120 < p["ts"] <= after]) == 1


def test_replay_catch_up_is_capped_for_gaps_of_days(monkeypatch):
    from footfall.edge_agent.agent import MAX_CATCH_UP_TICKS

    monkeypatch.setenv("FOOTFALL_HASH_KEY", KEY_HEX)
    sent = run_agent([(T0, probe(1)), (T0 + 3 * 86400, probe(1))])
    presence = [p for kind, p in sent if kind == "presence"]
    assert len(presence) == 1 + MAX_CATCH_UP_TICKS + 1
    assert presence[-1]["ts"] == T0 + 3 * 86400
    assert [v["closed_by"] for kind, v in sent if kind == "visit"] == ["gap", "end_of_capture"]


def test_replay_says_how_many_visits_a_default_hub_drops_as_expired(tmp_path):
    from footfall.edge_agent.pcapfile import write_pcap
    from footfall.hub.config import RetentionConfig

    raw_days = RetentionConfig().raw_days
    old = time.time() - (raw_days + 30) * 86400
    recent = time.time() - 86400
    frames = [(old + 700 * k, probe(k)) for k in range(3)] + [(recent + k, probe(10 + k)) for k in range(2)]
    pcap = tmp_path / "old.pcap"
    write_pcap(pcap, frames)
    key = tmp_path / "key"
    key.write_text(KEY_HEX)
    proc = subprocess.run(
        [sys.executable, "-m", "footfall", "agent", "replay", str(pcap), "--site", "demo", "--sensor", "s1",
         "--stdout", "--hash-key-file", str(key)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].endswith(", 5 visits")  # the summary stays the last line
    assert f"3 of 5 visits are older than {raw_days} days" in lines[-2]
    assert f"retention.raw_days = {raw_days}" in lines[-2]
    assert sum('"kind":"visit"' in line for line in proc.stdout.splitlines()) == 5
