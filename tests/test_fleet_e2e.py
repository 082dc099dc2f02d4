"""Fleet health at the centre, end to end: a real hub database with a provisioned roster (one
sensor online, one offline, one never seen, one whose certificate has expired) runs its real
sync cycle against the real central service (uvicorn, PostgreSQL); the fleet API, CSV and page
show every sensor worst first; a stale report is shown as stale; garbage reports are refused
with the reason and counted, and a hub that sends one counts the refusal.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from footfall import payloads, topics
from footfall.cloud_sync import fleet, outbox, signing
from footfall.cloud_sync.central import auth
from footfall.cloud_sync.central import fleet as central_fleet
from footfall.cloud_sync.central import schema as central_schema
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread, reset
from footfall.cloud_sync.config import SyncConfig
from footfall.cloud_sync.sender import Sender
from footfall.cloud_sync.sync_cli import cycle, status
from footfall.hub import store
from footfall.hub.config import HubConfig
from footfall.hub.ingest import ingest_many
from footfall.tools.provision import site as provision
from tests import test_central_sync as shared

pg_url = shared.pg_url
SITE = "store-7"
FLEET = "/api/v1/sync/fleet"


@pytest.fixture
def central_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    central_schema.init(db)
    reset(db)
    yield db
    db.close()


def _visit(sensor: str, device: str, first: float) -> tuple[str, bytes]:
    payload = payloads.visit_payload(
        site=SITE, sensor=sensor, device=device, randomized=False, first_seen=first, last_seen=first + 300,
        inside_s=200, sightings=9, rssi_max=-55, rssi_mean=-60.0, visit_class="visitor", long_stay=False,
        fingerprint="fp", ie_ids=[0, 1, 50],
    )  # fmt: skip
    return topics.topic(SITE, sensor, "visit"), payloads.dumps(payload)


def _status(sensor: str, state: str, now: float) -> tuple[str, bytes]:
    payload = payloads.status_payload(site=SITE, sensor=sensor, state=state, ts=now, version="0.1.0")
    return topics.topic(SITE, sensor, "status"), payloads.dumps(payload)


def make_store(tmp_path: Path, url: str) -> tuple[Any, SyncConfig, Path]:
    """A provisioned site (CA, hub and sensor certificates, CRL) and a hub database that has
    heard from s1 (online, three visits) and s2 (offline); s3 never connected; s4's certificate
    was issued already expired."""
    site_dir = tmp_path / "site"
    provision.init_site(site_dir, SITE, ["hub.lan"])
    for sensor in ("s1", "s2", "s3"):
        provision.add_sensor(site_dir, sensor)
    provision.add_sensor(site_dir, "s4", days=0)
    hub_dir = site_dir / "hub"
    (hub_dir / "crl.pem").write_bytes((site_dir / "ca" / "crl.pem").read_bytes())
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    now = time.time()
    messages = [_status("s1", "online", now), _status("s2", "offline", now - 600)]
    messages += [_visit("s1", f"{i:064x}", now - 3600 * (i + 1)) for i in range(3)]
    ingest_many(conn, messages, HubConfig(site=SITE, db=str(db)))
    cfg = SyncConfig(
        site=SITE, db=str(db), url=url, allow_http=True, roster=str(site_dir), mqtt_tls=True,
        mqtt_ca_certs=str(hub_dir / "ca.pem"), mqtt_certfile=str(hub_dir / "footfall-hub.crt"),
        backoff_base_s=0.02, backoff_cap_s=0.1, once_max_attempts=3,
    )  # fmt: skip
    return conn, cfg, site_dir


def login(url: str, user: str, password: str) -> requests.Session:
    s = requests.Session()
    r = s.post(f"{url}/api/v1/login", json={"username": user, "password": password}, timeout=5)
    assert r.status_code == 200, r.text
    return s


def rejected(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(("footfall_central_batches_rejected_total{", "footfall_central_fleet_reports_total{")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_hub_reports_its_fleet_and_the_centre_shows_it_worst_first(
    central_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FOOTFALL_SITE_DIR", raising=False)  # the roster comes from the settings
    with central_db.connect() as c:
        secret = auth.add_hub(c, SITE, name="Store 7").encode()
        auth.add_hub(c, "store-8", name="Store 8")  # registered, never reported
        auth.add_user(c, "ops", "ops-password-1", role="readonly")
        auth.add_user(c, "other", "other-password-1", role="readonly", stores=["store-8"])
    with ServerThread(create_app(CentralConfig(), db=central_db)) as server:
        conn, cfg, site_dir = make_store(tmp_path, server.url)
        sender = Sender(conn, cfg, secret, sleep=lambda s: None)
        assert cycle(conn, cfg, sender, pull=False)
        assert outbox.counters(conn)["fleet_reports"] == 1
        assert status(conn)["fleet_last_sent"] is not None

        ops = login(server.url, "ops", "ops-password-1")
        data = ops.get(f"{server.url}/api/v1/fleet", timeout=5).json()
        rows = {r["sensor"]: r for r in data["sensors"] if r["store"] == SITE}
        assert set(rows) == {"s1", "s2", "s3", "s4"}
        assert rows["s1"]["level"] == "ok" and rows["s1"]["visits_24h"] == 3
        assert rows["s1"]["last_ingest_age_s"] < 60
        assert rows["s2"]["problems"][0] == "down: offline"
        assert rows["s3"]["problems"] == ["down: never seen"] and rows["s3"]["last_ingest"] is None
        assert "certificate expired" in " ".join(rows["s4"]["problems"]) and rows["s4"]["cert_expiry"] < time.time()
        # The certificate dates are the ones provisioning issued.
        site = json.loads((site_dir / "site.json").read_text())
        issued = site["sensors"]["s1"].get("not_after") or site["sensors"]["s1"]["cert"]["not_after"]
        assert abs(rows["s1"]["cert_expiry"] - dt_ts(issued)) < 1
        # Worst first: the three down sensors (soonest expiry first: the expired one leads), then s1.
        order = [r["sensor"] for r in data["sensors"] if r["store"] == SITE]
        assert order[0] == "s4" and order[-1] == "s1" and set(order[1:3]) == {"s2", "s3"}
        stores = {s["store"]: s for s in data["stores"]}
        mine = stores[SITE]
        assert mine["level"] == "down" and not mine["report_stale"] and "3 sensors down" in mine["problems"]
        assert mine["sensors_total"] == 4 and mine["sensors_down"] == 3
        assert mine["crl_next_update"] > time.time() + 30 * 86400 and mine["hub_cert_expiry"] > time.time()
        assert mine["mqtt_connected"] is None  # ingest never ran here: unknown, not "down"
        assert mine["disk_free_bytes"] > 0
        assert stores["store-8"]["problems"] == ["no fleet report yet"] and stores["store-8"]["report_stale"]
        assert [s["store"] for s in data["stores"]] == [SITE, "store-8"]  # down before unknown

        # CSV: a header and one line per sensor, in the same order.
        text = ops.get(f"{server.url}/api/v1/fleet?format=csv", timeout=5).text
        table = list(csv.DictReader(io.StringIO(text)))
        assert [r["sensor"] for r in table if r["store"] == SITE] == order
        assert table[0]["level"] == "down" and table[0]["cert_expiry"].endswith("Z")
        stores_csv = ops.get(f"{server.url}/api/v1/fleet?format=csv&table=stores", timeout=5).text
        assert stores_csv.splitlines()[0].startswith("store,store_name,level,problems")
        # A user of another store sees only that store, and its empty sensor CSV still has a header.
        other = login(server.url, "other", "other-password-1")
        assert [s["store"] for s in other.get(f"{server.url}/api/v1/fleet", timeout=5).json()["stores"]] == ["store-8"]
        assert other.get(f"{server.url}/api/v1/fleet?format=csv", timeout=5).text.startswith("store,store_name,")
        # Signed in or not, the page itself is served; its data needs the login.
        assert "fleet.js" in requests.get(f"{server.url}/fleet", timeout=5).text
        assert requests.get(f"{server.url}/api/v1/fleet", timeout=5).status_code == 401

        # Stale: the same stored report seen by a centre whose staleness bound has passed.
        strict = ServerThread(create_app(CentralConfig(fleet_stale_after_h=0.5 / 3600), db=central_db)).start()
        try:
            time.sleep(0.7)
            late = login(strict.url, "ops", "ops-password-1").get(f"{strict.url}/api/v1/fleet", timeout=5).json()
        finally:
            strict.stop()
        mine = next(s for s in late["stores"] if s["store"] == SITE)
        assert mine["report_stale"] and any(p.startswith("report ") and p.endswith(" old") for p in mine["problems"])
        assert all(r["report_stale"] for r in late["sensors"] if r["store"] == SITE)
        assert rows["s1"]["level"] == "ok"
        assert next(r for r in late["sensors"] if r["sensor"] == "s1")["level"] == "stale"


def dt_ts(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


def _post(url: str, secret: bytes, body: bytes, *, hub: str = SITE, gz: bool = True) -> requests.Response:
    headers = signing.sign_headers(secret, hub, "POST", FLEET, body)
    if gz:
        headers["Content-Encoding"] = "gzip"
    return requests.post(url + FLEET, data=body, headers=headers, timeout=5)


def test_garbage_fleet_reports_are_refused_with_the_reason_and_counted(central_db: Database, tmp_path: Path) -> None:
    with central_db.connect() as c:
        secret = auth.add_hub(c, SITE).encode()
    now = time.time()
    good = {
        "v": 1, "hub": SITE, "ts": now, "stale_after_s": 180,
        "hub_status": {"last_ingest": now, "mqtt_connected": True},
        "sensors": [{"site": SITE, "sensor": "s1", "status": "online", "last_ingest": now, "visits_24h": 1}],
    }  # fmt: skip

    def z(doc: Any) -> bytes:
        return gzip.compress(json.dumps(doc).encode())

    deep = b"[" * 100_000 + b"]" * 100_000
    cases = [
        (z(good)[:-4], "truncated gzip"),
        (gzip.compress(b"not json at all"), "body is not JSON"),
        (gzip.compress(deep), "body is not JSON"),
        (z([1, 2]), "the report must be an object"),
        (z(good | {"v": 2}), "v must be 1"),
        (z(good | {"hub": "store-9"}), "hub does not match"),
        (z(good | {"ts": "yesterday"}), "ts must be a number"),
        (z(good | {"ts": now * 1000}), "ts must be unix seconds"),
        (z(good | {"sensors": "s1"}), "sensors must be a list"),
        (z(good | {"sensors": [good["sensors"][0] | {"status": "exploded"}]}), "sensors[0].status must be one of"),
        (z(good | {"sensors": [good["sensors"][0] | {"sensor": "../etc"}]}), "sensors[0].sensor must be"),
        (z(good | {"sensors": [good["sensors"][0] | {"visits_24h": -3}]}), "sensors[0].visits_24h must be"),
        (z(good | {"sensors": good["sensors"] * 2}), "listed twice"),
        (z(good | {"hub_status": {"mqtt_connected": "yes"}}), "hub_status.mqtt_connected must be"),
        (z(good | {"crls": [{"role": "=cmd|' /C calc'!A0", "next_update": now}]}), "crls[0].role must be"),
        (gzip.compress(b" " * (central_fleet.MAX_INFLATED_BYTES + 1)), "inflated body over the size bound"),
    ]
    with ServerThread(create_app(CentralConfig(), db=central_db)) as server:
        assert _post(server.url, secret, z(good)).status_code == 200
        for body, reason in cases:
            r = _post(server.url, secret, body)
            assert r.status_code == 400, (reason, r.text)
            assert r.json()["reason"] == "bad_fleet_report"
            assert reason in r.json()["error"], (reason, r.json()["error"])
        # Over the compressed bound before anything is read; unsigned or badly signed: 401.
        assert _post(server.url, secret, b"x" * (central_fleet.MAX_REPORT_BYTES + 1)).status_code == 413
        assert _post(server.url, b"not the secret", z(good)).status_code == 401
        assert requests.post(server.url + FLEET, data=z(good), timeout=5).status_code == 401
        counts = rejected(server.url)
        assert counts['footfall_central_batches_rejected_total{reason="bad_fleet_report"}'] == len(cases)
        assert counts['footfall_central_fleet_reports_total{result="refused"}'] == len(cases) + 1
        assert counts['footfall_central_fleet_reports_total{result="stored"}'] == 1
        # The good report stays: nothing of the refused ones was stored.
        with central_db.connect() as c:
            assert c.scalar("SELECT sensors_total FROM fleet_reports WHERE store = ?", (SITE,)) == 1

        # A hub whose roster names a sensor id the protocol refuses: the centre says why, the hub
        # logs and counts it (fleet_rejected) and its data still syncs.
        conn, cfg, _ = make_store(tmp_path, server.url)
        roster = tmp_path / "roster.json"
        roster.write_text(json.dumps({"site": SITE, "sensors": {"bad sensor!": {"status": "active"}}}))
        cfg.roster = str(roster)
        sender = Sender(conn, cfg, secret, sleep=lambda s: None)
        assert not fleet.send(conn, cfg, secret, sender.clock, src=fleet.sources(cfg, env={}))
        assert outbox.counters(conn)["fleet_rejected"] == 1
        with central_db.connect() as c:
            assert c.scalar("SELECT sensors_total FROM fleet_reports WHERE store = ?", (SITE,)) == 1
        assert sender.drain(max_attempts=2).ok


def test_an_older_database_gains_the_fleet_table_at_start(central_db: Database) -> None:
    with central_db.connect() as c, c.transaction():
        c.execute("DROP TABLE fleet_reports")
        c.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    central_schema.init(central_db)
    central_schema.init(central_db)  # and again: each migration runs once
    with central_db.connect() as c:
        assert c.scalar("SELECT value FROM meta WHERE key = 'schema_version'") == str(central_schema.MIGRATIONS[-1][0])
        assert c.scalar("SELECT COUNT(*) FROM fleet_reports") == 0
