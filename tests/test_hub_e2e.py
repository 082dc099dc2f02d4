"""A simulated store day -> agents -> Mosquitto -> hub -> the link job -> API numbers.

The numbers the store manager sees are estimates of people, over ALL people (Wi-Fi off, never
heard, far pavement included), with 90 % ranges and the heard counts beside them. They must
stay within the bounds docs/metrics.md documents for held-out days (tests/test_estimates.py
holds every figure to them without MQTT); here the point is the whole chain through a real
broker. Staff and fixed devices never count as visitors.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from footfall.hub import auth, store
from footfall.hub.api import WebSettings, create_app
from footfall.hub.config import HubConfig, MqttConfig
from footfall.hub.ingest import Ingestor
from footfall.hub.link import relink
from footfall.tools.simulator import simulate_day

DATE = "2026-11-02"


@pytest.mark.slow
def test_store_day_numbers_match_ground_truth(broker, tmp_path):
    from fastapi.testclient import TestClient

    truth = simulate_day(tmp_path / "day", seed=21, scale=0.5, site="demo", date=DATE, tz="UTC")
    db = tmp_path / "hub.db"
    config = HubConfig(
        site="demo",
        timezone="UTC",
        db=str(db),
        sensors=[s["id"] for s in truth["sensors"]],
        mqtt=MqttConfig(port=broker.port, client_id="footfall-hub-e2e"),
        link_every_s=0,
        hours="10-21",
    )
    ingestor = Ingestor(config)
    thread = threading.Thread(target=ingestor.run, daemon=True)
    thread.start()
    assert ingestor.ready.wait(15)
    key = tmp_path / "hash.key"
    key.write_text("7e" * 32)
    published = 0
    for s in truth["sensors"]:
        proc = subprocess.run(
            [sys.executable, "-m", "footfall", "agent", "replay", str(tmp_path / "day" / f"{s['id']}.pcap"),
             "--site", "demo", "--sensor", s["id"], "--broker", f"127.0.0.1:{broker.port}",
             "--hash-key-file", str(key)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        published += int(proc.stderr.strip().splitlines()[-1].split(", ")[-1].split()[0])
    conn = store.connect(db)
    deadline = time.monotonic() + 60
    while conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0] < published:
        assert time.monotonic() < deadline, "hub did not store every published visit"
        time.sleep(0.2)
    ingestor.stop()
    thread.join(10)
    assert conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0] == published
    relink(conn, config, since=0)
    api_key = auth.create_api_key(conn, "e2e")
    conn.close()

    # Ground truth over all people of the day.
    kinds = Counter(p["kind"] for p in truth["people"])

    clock = dt.datetime(2026, 11, 2, 23, 0, tzinfo=dt.UTC).timestamp()
    client = TestClient(create_app(db, WebSettings(tz="UTC", clock=lambda: clock)))
    headers = {"X-API-Key": api_key}
    r = client.get("/api/footfall", params={"start": DATE, "end": DATE, "granularity": "day"}, headers=headers)
    assert r.status_code == 200, r.text
    totals = r.json()["totals"]
    print("hub totals", totals, "ground truth", dict(kinds))
    assert totals["estimated"] is True
    # The held-out worst cases of docs/metrics.md ("How well"): visitors and passers-by within
    # 50 % (this store: -4 % and +11 %).
    assert totals["visitors"] == pytest.approx(kinds["visitor"], rel=0.5), (totals, kinds)
    assert totals["passersby"] == pytest.approx(kinds["passerby"], rel=0.5), (totals, kinds)
    assert totals["visitors_low"] <= totals["visitors"] <= totals["visitors_high"]
    assert totals["visitors_heard"] > 0 and totals["passersby_heard"] > 0
    assert 0 < totals["capture_rate"] < 1
    # Staff and fixed devices are excluded: counted with them (heard counts, per zone), the
    # visitors figure grows.
    zones = r.json()["zones"]
    r = client.get(
        "/api/footfall",
        params={"start": DATE, "end": DATE, "granularity": "day", "include_excluded": "true"},
        headers=headers,
    )
    with_staff = r.json()
    assert with_staff["totals"]["estimated"] is False  # estimates are of customers only
    assert sum(z["visitors"] for z in with_staff["zones"]) >= sum(z["visitors"] for z in zones) + 1
    # Hours: visitors only while the shop is open (10-21 local); an estimate puts at most a
    # fraction of a person on an ambiguous stay before opening.
    r = client.get("/api/footfall", params={"start": DATE, "end": DATE, "granularity": "hour"}, headers=headers)
    by_hour = {p["period"][-2:]: p["visitors"] for p in r.json()["series"]}
    assert sum(v for h, v in by_hour.items() if not 9 <= int(h) <= 21) <= 0.03 * totals["visitors"]
