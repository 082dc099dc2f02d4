"""The visit fast path (msgspec) must answer exactly what the json.loads path answers."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from footfall import schema

pytestmark = pytest.mark.skipif(schema._VISIT_DECODER is None, reason="msgspec not installed: only one path")

BASE = schema.visit_payload(
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
    return "ok", repr({k: payload.get(k, "<absent>") for k in schema.SPECS["visit"]})


def test_fast_path_agrees_with_json_loads_on_mutated_visits() -> None:
    rng = random.Random(5)
    fields = list(schema.SPECS["visit"]) + ["v", "type"]
    agreed = {"ok": 0, "error": 0}
    for _ in range(4000):
        payload = dict(BASE)
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
            raw = raw.replace(json.dumps(BASE[name]).encode(), rng.choice(RAW_ODD), 1)
        got, want = outcome(raw), exact(raw)
        assert got == want, raw
        agreed[got[0]] += 1
    # The fuzz exercised both answers, not just one.
    assert agreed["ok"] > 300 and agreed["error"] > 1000, agreed


def test_fast_path_accepts_the_agents_payloads_unchanged() -> None:
    raw = schema.dumps(BASE)
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
