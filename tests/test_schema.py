"""The visit fast path (msgspec) must answer exactly what the json.loads path answers."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from footfall import payloads, schema, schema_fields

pytestmark = pytest.mark.skipif(schema._VISIT_DECODER is None, reason="msgspec not installed: only one path")

V1_ARGS: dict[str, Any] = dict(
    site="s",
    sensor="a",
    device="d" * 32,
    randomized=True,
    first_seen=1_700_000_000.25,
    last_seen=1_700_000_100.5,
    inside_s=30.0,
    sightings=12,
    rssi_max=-55,
    rssi_mean=-61.3,
    visit_class="visitor",
    long_stay=False,
    fingerprint="fp",
    ie_ids=[0, 1, 50, 221],
    channels=[1, 6, 11],
    seq_first=10,
    seq_last=400,
    ssid_hashes=["ab", "cd"],
    burst_gap_s=20.5,
)
# 1_700_000_000.25 is 20.25 s into a UTC minute: the visit spans minutes 0, 1, 2 of it.
V2_ARGS: dict[str, Any] = dict(V1_ARGS, bursts=3, burst_offsets=[0.0, 41.05, 99.99], rssi_minutes=[-60, None, -55])
BASE = payloads.visit_payload(**V2_ARGS)
BASE_V1 = payloads.visit_payload(**V1_ARGS)
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    2**64 + 1,
    -(2**70),
    10**30,
    "x",
    "",
    [],
    [1, 2],
    [2**70],
    [1.5],
    ["a"],
    [[1]],
    [{"a": 1}],
    [True],
    [-1],
    [256],
    {},
    {"a": 2**80},
    1,
    2,
    [0],
    [0.0, 5],
    [None],
    [-55, None, -128],
    [127, None, -129],
    [None, None, None],
]
NUMERIC = ["first_seen", "last_seen", "dwell_s", "inside_s", "rssi_mean", "burst_gap_s", "sightings"]
RAW_ODD = [b"1e400", b"-1e400", b"NaN", b"Infinity", b"123456789012345678901234567890", b"1.0e19", b"-0.0"]


def exact(raw: bytes) -> tuple[str, str]:
    saved = schema._VISIT_DECODER
    schema._VISIT_DECODER = None
    try:
        return outcome(raw)
    finally:
        schema._VISIT_DECODER = saved


def outcome(raw: bytes) -> tuple[str, str]:
    try:
        payload = schema.validate(raw, "visit")
    except schema.SchemaError as exc:
        return "error", str(exc)
    # repr keeps int and float apart (1 == 1.0 would hide a difference).
    return "ok", repr({k: payload.get(k, "<absent>") for k in schema_fields.SPECS["visit"]})


@pytest.mark.parametrize("base", [BASE, BASE_V1], ids=["v2", "v1"])
def test_fast_path_agrees_with_json_loads_on_mutated_visits(base: dict[str, Any]) -> None:
    rng = random.Random(5)
    fields = list(schema_fields.SPECS["visit"]) + ["v", "type"]
    agreed = {"ok": 0, "error": 0}
    for _ in range(4000):
        payload = dict(base)
        for _ in range(rng.choice((1, 1, 2, 3))):
            name = rng.choice(fields)
            roll = rng.random()
            if roll < 0.1:
                payload.pop(name, None)
            elif roll < 0.2 and name in payload:
                payload[name] = -payload[name] if isinstance(payload[name], (int, float)) else payload[name]
            else:
                payload[name] = rng.choice(ODD_VALUES)
        raw = json.dumps(payload, separators=(",", ":")).encode()
        if rng.random() < 0.2:
            name = rng.choice(NUMERIC)
            raw = raw.replace(json.dumps(base[name]).encode(), rng.choice(RAW_ODD), 1)
        got, want = outcome(raw), exact(raw)
        assert got == want, raw
        agreed[got[0]] += 1
    # The fuzz exercised both answers, not just one.
    assert agreed["ok"] > 300 and agreed["error"] > 1000, agreed


def test_fast_path_accepts_the_agents_payloads_unchanged() -> None:
    raw = payloads.dumps(BASE)
    assert schema.validate(raw, "visit") == json.loads(raw)
    assert outcome(raw) == exact(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"{}",
        b"\xff\xfe",
        b'{"v":1,"type":"visit"}',
        b'{"v":2,"type":"visit"}',
        b'{"v":1,"type":"status"}',
        b' {"v":1}',
        b'{"v":1,"type":"visit","id":"\\ud800"}',
    ],
)
def test_fast_path_errors_match(raw: bytes) -> None:
    assert outcome(raw) == exact(raw)


def mutate_evidence(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    """A version 2 visit with its evidence fields bent the ways a broken sender would."""
    p = dict(payload, burst_offsets=list(payload["burst_offsets"]), rssi_minutes=list(payload["rssi_minutes"]))
    offsets, minutes = p["burst_offsets"], p["rssi_minutes"]
    for _ in range(rng.choice((1, 1, 2))):
        roll = rng.randrange(14)
        if roll == 0:
            offsets.append(rng.choice([p["dwell_s"], p["dwell_s"] + 0.1, 50.0, 0.0]))
        elif roll == 1 and offsets:
            offsets.pop(rng.randrange(len(offsets)))
        elif roll == 2 and offsets:
            offsets[rng.randrange(len(offsets))] = rng.choice([-0.0, -0.1, 1e308, True, None, "1", 3, 2**70])
        elif roll == 3:
            offsets.reverse()
        elif roll == 4:
            minutes.append(rng.choice([None, -50, -128]))
        elif roll == 5 and minutes:
            minutes.pop(rng.randrange(len(minutes)))
        elif roll == 6 and minutes:
            minutes[rng.randrange(len(minutes))] = rng.choice([None, 127, 128, -128, -129, 0, -50.0, True, "x"])
        elif roll == 7:
            p["bursts"] = rng.choice([0, 1, 2, 3, 4, 12, 13, 64, 65, -1, 2**70, 3.0, True])
        elif roll == 8:
            p["burst_offsets"] = offsets = [float(i) for i in range(rng.choice([64, 65]))]
            p["bursts"] = rng.choice([64, 65, 100])
            p["sightings"] = 200
            p["dwell_s"] = 100.0
        elif roll == 9:
            p["rssi_minutes"] = minutes = [-70] * rng.choice([1440, 1441, 1442])
            p["last_seen"] = p["first_seen"] + 60 * (len(minutes) - 1)
        elif roll == 10:
            p["sightings"] = rng.choice([1, 2, 3])
        elif roll == 11:
            p["dwell_s"] = rng.choice([0, 41.05, 99.98])
        elif roll == 12:
            p.pop(rng.choice(["bursts", "burst_offsets", "rssi_minutes"]), None)
        else:
            p["v"] = 1
    return p


def test_fast_path_agrees_with_json_loads_on_bent_evidence() -> None:
    rng = random.Random(7)
    agreed = {"ok": 0, "error": 0}
    for _ in range(3000):
        raw = json.dumps(mutate_evidence(rng, BASE), separators=(",", ":")).encode()
        got, want = outcome(raw), exact(raw)
        assert got == want, raw
        agreed[got[0]] += 1
    assert agreed["ok"] > 300 and agreed["error"] > 1000, agreed


def test_visit_payload_builds_version_2_with_the_evidence_and_1_without() -> None:
    assert BASE["v"] == 2 and BASE_V1["v"] == 1
    assert not {"bursts", "burst_offsets", "rssi_minutes"} & set(BASE_V1)
    assert BASE["bursts"] == 3
    assert BASE["burst_offsets"] == [0.0, 41.0, 99.9]  # truncated to 0.1 s
    assert BASE["rssi_minutes"] == [-60, None, -55]
    for payload in (BASE, BASE_V1):
        raw = payloads.dumps(payload)
        assert schema.validate(raw, "visit") == json.loads(raw)
        assert schema._fast_visit(raw) == json.loads(raw)  # the hot path takes both versions
    with pytest.raises(TypeError):
        payloads.visit_payload(**dict(V1_ARGS, bursts=2))


def test_burst_offsets_keep_the_first_64_and_never_pass_dwell() -> None:
    p = payloads.visit_payload(
        **dict(V2_ARGS, sightings=200, bursts=100, burst_offsets=[i * 1.0 + 0.99 for i in range(99)] + [100.25])
    )
    assert len(p["burst_offsets"]) == 64 and p["burst_offsets"][:3] == [0.9, 1.9, 2.9]
    # A float32 offset a hair past the last frame still lands on or before dwell_s.
    p = payloads.visit_payload(**dict(V2_ARGS, burst_offsets=[0.0, 50.0, 100.2504]))
    assert p["burst_offsets"][-1] <= p["dwell_s"] == 100.25
    schema.validate(payloads.dumps(p), "visit")


@pytest.mark.parametrize(
    ("first", "last", "given", "want"),
    [
        # first_seen rounds up onto a minute boundary: its frames join the next minute.
        (1_700_000_039.9997, 1_700_000_100.5, [-70, -60, -65], [-60, -65]),
        (1_700_000_039.9997, 1_700_000_040.2, [-70, -80], [-70]),
        # last_seen rounds up onto one: its last frames are heard in that minute.
        (1_700_000_000.25, 1_700_000_099.9996, [-70, -60], [-70, -60, -60]),
        # Both, within one raw minute.
        (1_700_000_039.9996, 1_700_000_039.9997, [-50], [-50]),
    ],
)
def test_minutes_follow_the_rounded_times(first: float, last: float, given: list, want: list) -> None:
    args = dict(V2_ARGS, first_seen=first, last_seen=last, bursts=1, burst_offsets=[0.0], rssi_minutes=given)
    p = payloads.visit_payload(**args)
    assert p["rssi_minutes"] == want
    assert schema.validate(payloads.dumps(p), "visit")["rssi_minutes"] == want


def test_version_1_visit_ignores_evidence_fields_on_both_paths() -> None:
    raw = payloads.dumps({**BASE_V1, "bursts": "x", "burst_offsets": 5, "rssi_minutes": [1.5]})
    assert outcome(raw) == exact(raw)
    got = schema.validate(raw, "visit")
    assert got["v"] == 1 and not {"bursts", "burst_offsets", "rssi_minutes"} & set(got)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rssi_minutes": [-60, None]}, "rssi_minutes has 2 entries but first_seen..last_seen span 3 UTC minutes"),
        ({"rssi_minutes": [-60, None, 200]}, "rssi_minutes entries must be null or dBm integers -128..127"),
        ({"rssi_minutes": [-60] * 1442}, "rssi_minutes holds at most 1441 entries"),
        ({"burst_offsets": [0.0, 99.99, 41.05]}, "burst_offsets must be sorted and at most dwell_s"),
        ({"burst_offsets": [0.0, 41.0, 100.3]}, "burst_offsets must be sorted and at most dwell_s"),
        ({"burst_offsets": [0.5, 41.0, 99.0]}, "burst_offsets must start with 0"),
        ({"burst_offsets": [0.0, 41.0]}, "burst_offsets must hold the first min(bursts, 64) burst starts"),
        ({"burst_offsets": [0.0, -1, 99.0]}, "burst_offsets must be non-negative numbers"),
        ({"bursts": 0}, "bursts must be >= 1"),
        ({"bursts": 13}, "bursts must be at most sightings"),
        ({"bursts": True}, "field 'bursts' must not be a boolean"),
        ({"last_seen": 10**400}, "first_seen/last_seen out of range"),
    ],
)
def test_bad_evidence_says_what_is_wrong(change: dict[str, Any], message: str) -> None:
    raw = payloads.dumps({**BASE, **change})
    with pytest.raises(schema.SchemaError, match=re.escape(message)):
        schema.validate(raw, "visit")
    assert outcome(raw) == exact(raw)


def test_versions_are_accepted_per_type() -> None:
    assert schema.VISIT_VERSIONS == (1, 2) and schema.VERSIONS["presence"] == (1,)
    presence = payloads.presence_payload(site="s", sensor="a", ts=1.0, window_s=60, devices=1, inside=0)
    with pytest.raises(schema.SchemaError, match="unsupported schema version 2 for 'presence'"):
        schema.validate(payloads.dumps({**presence, "v": 2}), "presence")
    with pytest.raises(schema.SchemaError, match=r"unsupported schema version 3 \(this build reads 1, 2\)"):
        schema.validate(payloads.dumps({**BASE, "v": 3}), "visit")
    assert schema.supported_version({"v": 2, "type": "visit"})
    assert not schema.supported_version({"v": 2, "type": "status"})
    assert not schema.supported_version({"v": True, "type": "visit"})
    assert schema.supported_version({"v": 2, "type": "nonsense"})  # then it is the type that is wrong


PRESENCE = payloads.presence_payload(site="s", sensor="a", ts=1_700_000_000.0, window_s=60, devices=12, inside=5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"devices": -100}, "devices must be a count 0..100000, got -100"),
        ({"inside": -100}, "inside must be a count 0..devices (12), got -100"),
        ({"inside": 13}, "inside must be a count 0..devices (12), got 13"),
        ({"devices": 10**9, "inside": 0}, "devices must be a count 0..100000, got 1000000000"),
        ({"window_s": -60}, "window_s must be seconds in (0, 86400], got -60"),
        ({"window_s": 0}, "window_s must be seconds in (0, 86400], got 0"),
        ({"window_s": 1e9}, "window_s must be seconds in (0, 86400]"),
    ],
)
def test_presence_refuses_negative_and_absurd_counts(change: dict[str, Any], message: str) -> None:
    # A negative count was stored and shown as "Now in store -100" on the dashboard.
    with pytest.raises(schema.SchemaError, match=re.escape(message)):
        schema.validate(payloads.dumps({**PRESENCE, **change}), "presence")


def test_presence_accepts_the_bounds() -> None:
    for change in ({"devices": 0, "inside": 0}, {"devices": 100_000, "inside": 100_000}, {"window_s": 86400}):
        assert schema.validate(payloads.dumps({**PRESENCE, **change}), "presence")["devices"] == change.get(
            "devices", 12
        )
