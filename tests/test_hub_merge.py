"""Store visits from sensor visits, device bookkeeping, unique-device estimates, retention, config."""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from footfall import topics
from footfall.hub import retention, store
from footfall.hub.config import (
    ConfigError,
    ExclusionConfig,
    HubConfig,
    IngestConfig,
    RetentionConfig,
    from_dict,
    load,
)
from footfall.hub.devices import HashEstimator, randomized_bounds
from footfall.hub.ingest import Incoming, Writer, ingest_many
from footfall.payloads import dumps, visit_payload

SITE = "st"
TZ = "Europe/Berlin"
# 2026-03-10 09:00 local (Berlin, UTC+1): a fixed morning, far from DST changes.
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=ZoneInfo(TZ)).timestamp()


def sv(sensor: str, device: str, first: float, last: float, rssi: int | None = -60, **kw: Any) -> dict[str, Any]:
    return visit_payload(
        site=SITE,
        sensor=sensor,
        device=device,
        randomized=kw.pop("randomized", False),
        first_seen=first,
        last_seen=last,
        inside_s=kw.pop("inside_s", 0.0),
        sightings=3,
        rssi_max=rssi,
        rssi_mean=None if rssi is None else rssi - 4.0,
        visit_class=kw.pop("visit_class", "passerby"),
        long_stay=kw.pop("long_stay", False),
        fingerprint=kw.pop("fingerprint", "fp"),
        ie_ids=[0, 1],
        **kw,
    )


def cfg(**kw: Any) -> HubConfig:
    kw.setdefault("ingest", IngestConfig(log_every_s=0))
    # Fixed dates below must never fall out of the retention window as the years pass.
    kw.setdefault("retention", RetentionConfig(raw_days=36500))
    return HubConfig(site=SITE, timezone=TZ, merge_gap_s=120, **kw)


def feed(conn: sqlite3.Connection, payloads: list[dict[str, Any]], config: HubConfig | None = None) -> list[str]:
    config = config or cfg()
    return ingest_many(conn, [(topics.topic(SITE, p["sensor"], "visit"), dumps(p)) for p in payloads], config)


def visits(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute("SELECT * FROM visits ORDER BY device, first_seen")]


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return store.connect(tmp_path / "hub.db")


def test_overlapping_sensors_make_one_visit_with_the_strongest_sensor(conn: sqlite3.Connection) -> None:
    feed(
        conn,
        [
            sv("s1", "d", T0, T0 + 600, rssi=-72, inside_s=100, visit_class="passerby"),
            sv("s2", "d", T0 + 60, T0 + 900, rssi=-48, inside_s=500, visit_class="visitor"),
            sv("s3", "d", T0 + 100, T0 + 200, rssi=None, inside_s=50),
        ],
    )
    [v] = visits(conn)
    assert (v["first_seen"], v["last_seen"], v["dwell_s"]) == (T0, T0 + 900, 900)
    assert (v["best_sensor"], v["best_rssi"], v["class"], v["n_sensor_visits"]) == ("s2", -48, "visitor", 3)
    assert json.loads(v["sensors"]) == ["s1", "s2", "s3"]
    assert v["inside_s"] == 500  # largest per-sensor inside time: sensors see the same minutes
    assert (v["day"], v["hour"]) == ("2026-03-10", 9)
    ids = {r[0] for r in conn.execute("SELECT visit_id FROM sensor_visits")}
    assert ids == {v["id"]}


def test_adjacent_within_gap_merge_and_beyond_gap_do_not(conn: sqlite3.Connection) -> None:
    feed(
        conn,
        [
            sv("s1", "a", T0, T0 + 100),
            sv("s1", "a", T0 + 220, T0 + 300, inside_s=30),  # 120 s gap: same visit
            sv("s1", "b", T0, T0 + 100),
            sv("s1", "b", T0 + 221, T0 + 300),  # 121 s gap: a new visit
        ],
    )
    by_device = [(v["device"], v["first_seen"], v["last_seen"], v["n_sensor_visits"]) for v in visits(conn)]
    assert by_device == [("a", T0, T0 + 300, 2), ("b", T0, T0 + 100, 1), ("b", T0 + 221, T0 + 300, 1)]


def test_late_message_bridges_two_visits(conn: sqlite3.Connection) -> None:
    feed(conn, [sv("s1", "d", T0, T0 + 100), sv("s2", "d", T0 + 1000, T0 + 1100, visit_class="visitor")])
    assert len(visits(conn)) == 2
    assert conn.execute("SELECT visit_count, total_dwell_s FROM devices").fetchone()[:] == (2, 200)
    outcomes = feed(conn, [sv("s3", "d", T0 + 150, T0 + 950, rssi=-30)])
    assert outcomes == ["stored"]
    [v] = visits(conn)
    assert (v["first_seen"], v["last_seen"], v["n_sensor_visits"], v["best_sensor"]) == (T0, T0 + 1100, 3, "s3")
    assert v["class"] == "visitor"
    assert {r[0] for r in conn.execute("SELECT visit_id FROM sensor_visits")} == {v["id"]}
    device = conn.execute("SELECT visit_count, total_dwell_s, first_visitor_day FROM devices").fetchone()
    assert tuple(device) == (1, 1100, "2026-03-10")


def _canonical(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    cols = "device, first_seen, last_seen, dwell_s, inside_s, class, long_stay, best_sensor, best_rssi, sensors"
    rows = conn.execute(f"SELECT {cols}, n_sensor_visits, day, hour FROM visits ORDER BY device, first_seen")
    return [tuple(r) for r in rows]


def test_merge_is_independent_of_order_batching_and_duplicates(tmp_path: Path) -> None:
    rng = random.Random(3)
    payloads = []
    for d in range(25):
        t = T0 + rng.uniform(0, 3000)
        for _ in range(rng.randint(1, 6)):
            first = t + rng.uniform(-200, 900)
            payloads.append(
                sv(
                    rng.choice(["s1", "s2", "s3"]),
                    f"dev{d}",
                    first,
                    first + rng.uniform(0, 400),
                    rssi=rng.randint(-90, -30),
                    inside_s=rng.uniform(0, 50),
                    visit_class=rng.choice(["visitor", "passerby"]),
                )
            )
    reference = store.connect(tmp_path / "ref.db")
    feed(reference, sorted(payloads, key=lambda p: p["first_seen"]))
    expected = _canonical(reference)
    for trial in range(4):
        conn = store.connect(tmp_path / f"t{trial}.db")
        shuffled = payloads + rng.sample(payloads, 20)  # replays
        rng.shuffle(shuffled)
        config = cfg(ingest=IngestConfig(batch_max=rng.randint(1, 40), log_every_s=0))
        outcomes = feed(conn, shuffled, config)
        assert outcomes.count("stored") == len(payloads)
        assert _canonical(conn) == expected
        assert conn.execute("SELECT sum(visit_count) FROM devices").fetchone()[0] == len(expected)
        dwell = conn.execute("SELECT sum(total_dwell_s) FROM devices").fetchone()[0]
        assert dwell == pytest.approx(sum(v[3] for v in expected))


def test_local_day_and_hour_follow_the_site_time_zone(conn: sqlite3.Connection) -> None:
    late = datetime(2026, 7, 1, 23, 30, tzinfo=ZoneInfo(TZ)).timestamp()  # 21:30 UTC in summer time
    feed(conn, [sv("s1", "tz", late, late + 60)])
    [v] = visits(conn)
    assert (v["day"], v["hour"]) == ("2026-07-01", 23)


def test_long_stay_and_staff_devices_are_excluded(conn: sqlite3.Connection) -> None:
    config = cfg(exclusion=ExclusionConfig(staff_days=3, staff_hours=4))
    feed(conn, [sv("s1", "printer", T0, T0 + 60, long_stay=True)], config)
    feed(conn, [sv("s1", "printer", T0 + 86400, T0 + 86400 + 60)], config)
    day = 86400
    staff = [sv("s1", "clerk", T0 + k * day, T0 + k * day + 5 * 3600, visit_class="visitor") for k in range(3)]
    feed(conn, staff[:2], config)
    assert conn.execute("SELECT excluded FROM devices WHERE device_key = 'clerk'").fetchone()[0] == 0
    feed(conn, staff[2:], config)
    rows = {r["device_key"]: r for r in conn.execute("SELECT * FROM devices")}
    assert rows["printer"]["excluded"] == 1 and rows["printer"]["excluded_reason"] == "long_stay"
    assert rows["clerk"]["excluded"] == 1 and rows["clerk"]["excluded_reason"].startswith("staff")
    assert conn.execute("SELECT count(*) FROM visits WHERE excluded = 0").fetchone()[0] == 0
    # Visits arriving after the exclusion are excluded too.
    feed(conn, [sv("s1", "clerk", T0 + 5 * day, T0 + 5 * day + 60)], config)
    assert conn.execute("SELECT count(*) FROM visits WHERE excluded = 0").fetchone()[0] == 0


def test_unique_devices_bracket_randomized_macs(conn: sqlite3.Connection) -> None:
    feed(
        conn,
        [
            # One stable device, seen twice.
            sv("s1", "stable", T0, T0 + 100),
            sv("s1", "stable", T0 + 5000, T0 + 5100),
            # One phone rotating its MAC: three hashes back to back, same fingerprint.
            sv("s1", "r1", T0, T0 + 300, randomized=True, fingerprint="iphone"),
            sv("s1", "r2", T0 + 400, T0 + 700, randomized=True, fingerprint="iphone"),
            sv("s1", "r3", T0 + 800, T0 + 1000, randomized=True, fingerprint="iphone"),
            # Two phones of another model at the same time.
            sv("s1", "p1", T0, T0 + 600, randomized=True, fingerprint="pixel"),
            sv("s1", "p2", T0 + 100, T0 + 500, randomized=True, fingerprint="pixel"),
        ],
    )
    est = HashEstimator(link_gap_s=600).estimate_unique(conn, T0 - 10, T0 + 6000)
    assert (est.stable, est.randomized) == (1, 3)
    assert (est.count, est.low, est.high) == (4, 4, 6)
    assert est.confidence == pytest.approx(4 / 6, abs=0.001)
    only_stable = HashEstimator().estimate_unique(conn, T0 + 4000, T0 + 6000)
    assert (only_stable.count, only_stable.low, only_stable.high, only_stable.confidence) == (1, 1, 1, 1.0)


def test_randomized_bounds_chain_gap() -> None:
    rows = [("a", 0.0, 10.0, "f"), ("b", 20.0, 30.0, "f"), ("c", 1000.0, 1010.0, "f")]
    assert randomized_bounds(rows, link_gap_s=60) == (1, 2, 3)  # c came 970 s later: another device
    assert randomized_bounds(rows, link_gap_s=2000) == (1, 1, 3)
    assert randomized_bounds([], 60) == (0, 0, 0)


def test_retention_rolls_up_before_deleting_and_keeps_totals(conn: sqlite3.Connection) -> None:
    config = cfg()
    now = T0 + 40 * 86400
    rng = random.Random(5)
    payloads = []
    for d in range(60):
        day = rng.randint(0, 35)
        first = T0 + day * 86400 + rng.uniform(0, 8 * 3600)
        payloads.append(
            sv(
                rng.choice(["s1", "s2"]),
                f"dev{d % 20}",
                first,
                first + rng.uniform(10, 2000),
                visit_class=rng.choice(["visitor", "passerby"]),
                rssi=rng.randint(-90, -40),
            )
        )
    writer = Writer(conn, config)
    writer.write([Incoming(topics.topic(SITE, p["sensor"], "visit"), dumps(p)) for p in payloads])
    config.retention.raw_days = 30

    def totals() -> tuple[int, int, float, int, int]:
        q = """SELECT coalesce(sum(class = 'visitor'), 0), coalesce(sum(class = 'passerby'), 0),
                      coalesce(sum(CASE WHEN class = 'visitor' THEN dwell_s END), 0),
                      coalesce(sum(class = 'visitor' AND d.first_visitor_day >= v.day), 0),
                      coalesce(sum(class = 'visitor' AND d.first_visitor_day < v.day), 0)
               FROM visits v JOIN devices d USING (device_key) WHERE v.excluded = 0"""
        raw = conn.execute(q).fetchone()
        rolled = conn.execute(
            """SELECT coalesce(sum(visitors), 0), coalesce(sum(passersby), 0), coalesce(sum(dwell_s_sum), 0),
                      coalesce(sum(new_visitors), 0), coalesce(sum(returning_visitors), 0)
               FROM hourly WHERE rolled_up = 1"""
        ).fetchone()
        return tuple(round(a + b, 3) for a, b in zip(raw, rolled, strict=True))  # type: ignore[return-value]

    before = totals()
    n_visits = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
    result = retention.apply(conn, config, now=now)
    assert result.visits_deleted > 0 and result.hours_rolled_up > 0
    assert result.cutoff_day == "2026-03-20"
    assert conn.execute("SELECT count(*) FROM visits WHERE day < '2026-03-20'").fetchone()[0] == 0
    assert (
        conn.execute("SELECT count(*) FROM sensor_visits WHERE visit_id NOT IN (SELECT id FROM visits)").fetchone()[0]
        == 0
    )
    assert totals() == before
    # A second run changes nothing; devices keep lifetime counts.
    retention.apply(conn, config, now=now)
    assert totals() == before
    assert conn.execute("SELECT sum(visit_count) FROM devices").fetchone()[0] == n_visits


def test_config_from_toml_with_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        'site = "store-042"\ntimezone = "Europe/Berlin"\nsensors = ["s1", "s2"]\n'
        '[mqtt]\nhost = "hub.local"\nport = 8883\ntls = true\n[retention]\nraw_days = 90\n'
    )
    c = load(
        path,
        env={"FOOTFALL_HUB_MQTT_PORT": "1884", "FOOTFALL_HUB_SENSORS": "s1,s2,s3", "FOOTFALL_HUB_MQTT_PASSWORD": "pw"},
    )
    assert (c.site, c.mqtt.host, c.mqtt.port, c.mqtt.tls) == ("store-042", "hub.local", 1884, True)
    assert c.sensors == ["s1", "s2", "s3"] and c.retention.raw_days == 90
    assert c.client_id == "footfall-hub-store-042" and c.mqtt_password() == "pw"
    assert from_dict({"hub": {"site": "x"}}, env={}).site == "x"
    with pytest.raises(ConfigError, match="unknown setting"):
        from_dict({"sitee": "x"}, env={})
    with pytest.raises(ConfigError, match="timezone"):
        from_dict({"timezone": "Mars/Olympus"}, env={})
    with pytest.raises(ConfigError, match="port"):
        from_dict({"mqtt": {"port": "many"}}, env={})
    with pytest.raises(ConfigError, match="site"):
        from_dict({"site": "a/b"}, env={})
    # Checks that once sat after a return and never ran.
    with pytest.raises(ConfigError, match="retention days"):
        from_dict({"retention": {"raw_days": 0}}, env={})
    with pytest.raises(ConfigError, match="receive_maximum"):
        from_dict({"ingest": {"batch_max": 100}, "mqtt": {"receive_maximum": 50}}, env={})
    with pytest.raises(ConfigError, match="batch_max"):
        from_dict({"ingest": {"batch_max": 0}}, env={})


def test_cli_ingest_sensors_retention_remerge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from footfall.cli import main

    db = tmp_path / "hub.db"
    lines = tmp_path / "visits.jsonl"
    lines.write_text("\n".join(dumps(sv("s1", f"c{i}", T0 + i, T0 + i + 30)).decode() for i in range(5)) + "\n")
    env_db = ["--db", str(db)]
    assert main(["hub", "ingest", *env_db, "--topic", topics.topic("store", "s1", "visit"), str(lines)]) == 1
    assert json.loads(capsys.readouterr().out.strip()) == {"rejected:mismatch": 5}  # payloads say site "st"
    config = tmp_path / "hub.toml"
    config.write_text(f'site = "{SITE}"\ntimezone = "{TZ}"\n[retention]\nraw_days = 36500\n')
    args = ["--config", str(config), *env_db]
    assert main(["hub", "ingest", *args, "--topic", topics.topic(SITE, "s1", "visit"), str(lines)]) == 0
    assert json.loads(capsys.readouterr().out.strip()) == {"stored": 5}
    assert main(["hub", "sensors", *args]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["sensor"] == "s1" and out[0]["messages"] == 5
    assert {"rejected": "mismatch", "count": 5} in [{k: o.get(k) for k in ("rejected", "count")} for o in out]
    assert main(["hub", "remerge", *args]) == 0
    assert json.loads(capsys.readouterr().out) == {"visits": 5}
    assert main(["hub", "retention", *args]) == 0
    assert json.loads(capsys.readouterr().out)["visits_deleted"] == 0


class _FailingEstimator(HashEstimator):
    """An estimator with a bug for one device: ingest must isolate it, not stop."""

    def device_key(self, sensor_visit: Any) -> str:
        if sensor_visit["device"] == "poison":
            raise RuntimeError("estimator bug")
        return super().device_key(sensor_visit)


def test_a_message_that_cannot_be_stored_is_isolated(conn: sqlite3.Connection) -> None:
    payloads = [sv("s1", "ok1", T0, T0 + 5), sv("s1", "poison", T0, T0 + 5), sv("s1", "ok2", T0, T0 + 5)]
    future = sv("s1", "future", T0, T0 + 5)
    future["first_seen"] = future["last_seen"] = 1e300  # finite, valid JSON, but no real time
    writer = Writer(conn, cfg(), _FailingEstimator())
    batch = [Incoming(topics.topic(SITE, "s1", "visit"), dumps(p)) for p in [*payloads, future]]
    assert writer.write(batch) == ["stored", "rejected:error", "stored", "rejected:schema"]
    assert {r[0] for r in conn.execute("SELECT device FROM sensor_visits")} == {"ok1", "ok2"}
    counts = dict(conn.execute("SELECT reason, count FROM ingest_rejects").fetchall())
    assert counts == {"error": 1, "schema": 1}
