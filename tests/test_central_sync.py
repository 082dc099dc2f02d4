"""Central service, sync side: signed batches from three hubs merge into one profile per
device; replays, tampering, stale timestamps and replayed nonces are refused and counted.

Every test runs against SQLite and a real PostgreSQL (a throwaway database for the session;
skipped when none is reachable at 127.0.0.1:5432).
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from footfall.cloud_sync.central import apply, auth, profiles, schema
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import (
    postgres_available,
    profile_record,
    reset,
    signed_batch,
    signed_get,
    throwaway_postgres,
)

HUBS = ("store-1", "store-2", "store-3")
DEV = "0123456789abcdef0123456789abcdef"
BATCHES = "/api/v1/sync/batches"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    if not postgres_available():
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(tmp_path / "central.db")
        schema.init(db)
    else:
        db = Database(request.getfixturevalue("pg_url"))
        schema.init(db)
        reset(db)
    yield db
    db.close()


@pytest.fixture
def chain_key(tmp_path: Path) -> Path:
    path = tmp_path / "chain.key"
    path.write_text("ab" * 32 + "\n")
    return path


@pytest.fixture
def central(database: Database, chain_key: Path) -> Iterator[TestClient]:
    app = create_app(CentralConfig(chain_key_file=str(chain_key), max_batch_bytes=64 * 1024), db=database)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def secrets_(database: Database) -> dict[str, str]:
    with database.connect() as conn:
        return {hub: auth.add_hub(conn, hub) for hub in HUBS}


def post(client: TestClient, hub: str, secret: str, batch_id: str, seq: int, records: list, **kw):
    body, headers = signed_batch(hub, secret, batch_id, seq, records, **kw)
    return client.post(BATCHES, content=body, headers=headers)


def rejected(client: TestClient) -> dict[str, float]:
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("footfall_central_batches_rejected_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def snapshot(db: Database) -> dict[str, list]:
    with db.connect() as conn:
        return {
            t: conn.all(f"SELECT * FROM {t} ORDER BY 1, 2")
            for t in ("profiles", "profile_stores", "identifiers", "profile_events", "daily_aggregates")
        }


def test_three_hubs_merge_into_one_profile(central: TestClient, secrets_: dict[str, str], database: Database):
    for i, hub in enumerate(HUBS):
        records = [
            profile_record(
                DEV,
                first_seen=1_790_000_000.0 + i * 86400,
                last_seen=1_790_000_600.0 + i * 86400,
                visits=i + 1,
                dwell_total_s=100.0 * (i + 1),
                cluster="lunch-time regulars",
                segments=[{"name": "short stay", "kind": "rule", "since": 1.0}],
            ),
            profile_record(f"{hub.replace('-', '')}{'0' * 25}", visits=1),
            {"kind": "event", "key": f"coupon-{i}", "data": {"device": DEV, "type": "coupon_issued", "ts": 1.0 + i}},
            {
                "kind": "segment_change",
                "key": f"short|{DEV}|enter",
                "data": {"segment": "short stay", "device": DEV, "change": "enter", "ts": 2.0},
            },
            {
                "kind": "daily_aggregate",
                "key": f"{hub}|2026-11-20",
                "data": {"day": "2026-11-20", "visitors": 10 + i, "passersby": 30, "capture_rate": 0.25},
            },
        ]
        r = post(central, hub, secrets_[hub], f"b-{hub}-1", 1, records)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 5, "duplicate": False, "seq": 1}
    with database.connect() as conn:
        p = conn.dicts("SELECT * FROM profiles WHERE device = ?", (DEV,))[0]
        assert (p["stores"], p["visits"], p["dwell_s"]) == (3, 6, 600.0)
        assert p["first_seen"] == 1_790_000_000.0 and p["last_seen"] == 1_790_000_600.0 + 2 * 86400
        stores = conn.all("SELECT store, visits FROM profile_stores WHERE device = ? ORDER BY store", (DEV,))
        assert stores == [("store-1", 1), ("store-2", 2), ("store-3", 3)]
        assert conn.scalar("SELECT COUNT(*) FROM profiles") == 4
        kinds = conn.all(
            "SELECT kind, COUNT(*) FROM profile_events WHERE device = ? GROUP BY kind ORDER BY kind", (DEV,)
        )
        assert kinds == [("coupon_issued", 3), ("segment_entry", 3)]
        ident = conn.all("SELECT type, value, active FROM identifiers WHERE device = ?", (DEV,))
        assert ident == [("mac_hash", DEV, 1)]
    stores = {s["hub_id"]: s for s in central.get("/api/v1/stores", headers=_admin(database)).json()["stores"]}
    assert stores["store-2"]["latest_day"]["visitors"] == 11
    assert stores["store-1"]["last_sync_age_s"] < 60


def _admin(database: Database) -> dict[str, str]:
    with database.connect() as conn:
        return {"X-API-Key": auth.create_api_key(conn, f"admin-{time.monotonic_ns()}", role="admin")}


def test_replayed_batch_changes_nothing(central: TestClient, secrets_: dict[str, str], database: Database):
    hub, secret = "store-1", secrets_["store-1"]
    records = [
        profile_record(DEV, visits=3),
        {"kind": "event", "key": "v1", "data": {"device": DEV, "type": "visit", "ts": 5.0}},
    ]
    assert post(central, hub, secret, "batch-a", 1, records).json()["duplicate"] is False
    before = snapshot(database)
    # Same batch id resent (new nonce, as a retrying hub does): acknowledged, a no-op.
    again = post(central, hub, secret, "batch-a", 1, records)
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicate": True, "seq": 1}
    assert snapshot(database) == before
    # Re-cut under a new id with the same content: record-level upserts still change nothing.
    assert post(central, hub, secret, "batch-b", 2, records).json()["duplicate"] is False
    assert snapshot(database) == before
    # An older version of the profile arriving late does not overwrite the newer one.
    old = profile_record(DEV, visits=1, last_seen=1_790_000_100.0)
    post(central, hub, secret, "batch-c", 3, [old])
    assert snapshot(database) == before
    metrics = central.get("/metrics").text
    assert 'footfall_central_batches_total{result="duplicate"} 1' in metrics


def test_tampered_signed_stale_and_replayed_requests_are_401_and_counted(
    central: TestClient, secrets_: dict[str, str], database: Database
):
    hub, secret = "store-1", secrets_["store-1"]
    records = [profile_record(DEV)]
    body, headers = signed_batch(hub, secret, "t1", 1, records)
    # Tampered body: the signature covers the compressed bytes exactly.
    tampered = gzip.compress(gzip.decompress(body).replace(b'"visits":1', b'"visits":9'))
    assert central.post(BATCHES, content=tampered, headers=headers).status_code == 401
    # Wrong secret.
    body2, headers2 = signed_batch(hub, "not-the-secret", "t1", 1, records)
    r = central.post(BATCHES, content=body2, headers=headers2)
    assert r.status_code == 401 and r.json()["reason"] == "bad_signature"
    # Timestamp outside the 300 s window.
    body3, headers3 = signed_batch(hub, secret, "t1", 1, records, now=time.time() - 900)
    assert central.post(BATCHES, content=body3, headers=headers3).json()["reason"] == "stale_timestamp"
    # Unknown hub.
    body4, headers4 = signed_batch("store-9", secret, "t1", 1, records)
    assert central.post(BATCHES, content=body4, headers=headers4).status_code == 401
    # A captured request replayed byte for byte (same nonce) is refused.
    assert central.post(BATCHES, content=body, headers=headers).status_code == 200
    r = central.post(BATCHES, content=body, headers=headers)
    assert r.status_code == 401 and r.json()["reason"] == "replay"
    # A hub cannot write as another store: the body's hub must be the signed one.
    body5, headers5 = signed_batch(hub, secret, "t2", 2, records)
    headers5 = {**headers5}
    forged = gzip.compress(gzip.decompress(body5).replace(b'"hub":"store-1"', b'"hub":"store-2"'))
    from footfall.cloud_sync import signing

    headers5.update(signing.sign_headers(secret.encode(), hub, "POST", BATCHES, forged))
    assert central.post(BATCHES, content=forged, headers=headers5).status_code == 400
    assert rejected(central) == {
        "bad_signature": 2,
        "stale_timestamp": 1,
        "unknown_hub": 1,
        "replay": 1,
        "malformed": 1,
    }
    with database.connect() as conn:
        assert conn.scalar("SELECT visits FROM profiles WHERE device = ?", (DEV,)) == 1
        assert conn.scalar("SELECT COUNT(*) FROM applied_batches") == 1


def test_size_bound_and_malformed_batches(central: TestClient, secrets_: dict[str, str], database: Database):
    hub, secret = "store-1", secrets_["store-1"]
    # Over the compressed bound (64 KiB in this fixture): 413 before any parsing.
    import os

    big = [profile_record(os.urandom(16).hex(), cluster=os.urandom(40).hex()) for _ in range(1500)]
    body, headers = signed_batch(hub, secret, "big", 1, big)
    assert len(body) > 64 * 1024
    assert central.post(BATCHES, content=body, headers=headers).status_code == 413
    # Not gzip at all.
    from footfall.cloud_sync import signing

    raw = b"not gzip"
    h = signing.sign_headers(secret.encode(), hub, "POST", BATCHES, raw)
    h.update({"Content-Encoding": "gzip", "Idempotency-Key": "x"})
    r = central.post(BATCHES, content=raw, headers=h)
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    # Idempotency-Key that does not match the body's batch_id.
    body, headers = signed_batch(hub, secret, "k1", 1, [profile_record(DEV)])
    headers["Idempotency-Key"] = "other"
    assert central.post(BATCHES, content=body, headers=headers).status_code == 400
    # Good and bad records in one batch: the good ones land, the bad ones are listed.
    records = [
        profile_record(DEV),
        {"kind": "profile", "key": "x", "data": {"first_seen": "yesterday"}},
        {"kind": "nonsense", "key": "y", "data": {}},
        profile_record("fedcba98765432100123456789abcdef"),
    ]
    r = post(central, hub, secret, "mixed", 2, records)
    assert r.status_code == 200
    assert r.json()["accepted"] == 2 and r.json()["rejected"] == 2
    assert any("first_seen" in e for e in r.json()["errors"])
    with database.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM profiles") == 2
    assert 'footfall_central_records_total{outcome="rejected"} 2' in central.get("/metrics").text


def test_phone_hash_needs_consent_and_withdrawal_deletes_it(
    central: TestClient, secrets_: dict[str, str], database: Database
):
    hub, secret = "store-1", secrets_["store-1"]
    other = "fedcba98765432100123456789abcdef"
    records = [
        profile_record(DEV, phone_md5="a" * 32, partner_hash="b" * 32, consent={"pd": True, "ts": 100.0}),
        profile_record(other, phone_md5="c" * 32),  # no consent on record: dropped
    ]
    assert post(central, hub, secret, "p1", 1, records).status_code == 200
    with database.connect() as conn:
        rows = conn.all("SELECT device, type FROM identifiers WHERE type <> 'mac_hash' ORDER BY device, type")
        assert rows == [(DEV, "mac_md5"), (DEV, "phone_md5")]
        conn.execute("INSERT INTO export_items (export_id, device, payload, created) VALUES ('e', ?, '{}', 0)", (DEV,))
    admin = _admin(database)
    r = central.post("/api/v1/consents/withdraw", json={"device": DEV}, headers=admin)
    assert r.json()["deleted"] == {"personal_identifiers": 2, "queued_exports": 1}
    # The hub still holding the old consent resends the hash: the later withdrawal stands.
    again = [profile_record(DEV, phone_md5="a" * 32, consent={"pd": True, "ts": 100.0}, last_seen=1_790_009_000.0)]
    post(central, hub, secret, "p2", 2, again)
    with database.connect() as conn:
        assert conn.all("SELECT type FROM identifiers WHERE device = ?", (DEV,)) == [("mac_hash",)]
        assert conn.scalar("SELECT COUNT(*) FROM export_items") == 0
        pd, given, withdrawn = conn.one("SELECT pd_consent, given, withdrawn FROM consents WHERE device = ?", (DEV,))
        assert (pd, given) == (0, None) and withdrawn > 0  # only the fact and the date
        assert conn.scalar("SELECT COUNT(*) FROM profile_events WHERE kind = 'consent_withdrawn'") == 1
    assert 'footfall_central_records_total{outcome="dropped_no_consent"} 2' in central.get("/metrics").text
    # Every hub hears of it.
    for h in HUBS:
        items = central.get(
            "/api/v1/sync/pushback?since=0", headers=signed_get(h, secrets_[h], "/api/v1/sync/pushback?since=0")
        )
        assert {"kind": "consent_withdrawn", "device": DEV} in [
            {k: v for k, v in i.items() if k != "ts"} for i in items.json()["items"]
        ]


def test_optout_page_propagates_to_every_hub(
    central: TestClient, secrets_: dict[str, str], database: Database, chain_key: Path, caplog
):
    from footfall.edge_agent.identity import Identifier, load_key, parse_mac

    mac = "3C:22:FB:12:34:56"
    device = Identifier(load_key(chain_key)).device_id(parse_mac(mac))
    post(
        central,
        "store-1",
        secrets_["store-1"],
        "o1",
        1,
        [profile_record(device, phone_md5="d" * 32, consent={"pd": True})],
    )
    assert central.get("/optout").status_code == 200
    with caplog.at_level("DEBUG"):
        r = central.post("/api/v1/optout", json={"mac": "3c-22-fb-12-34-56"})
    assert r.status_code == 200, r.text
    bad = central.post("/api/v1/optout", json={"mac": "3c:22:fb:12:34"})
    assert bad.status_code == 400 and "3c" not in bad.text.lower()
    assert "3c:22" not in caplog.text.lower() and "3c-22" not in caplog.text.lower()
    with database.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM profiles WHERE device = ?", (device,)) == 0
        assert conn.scalar("SELECT COUNT(*) FROM identifiers WHERE device = ?", (device,)) == 0
        assert conn.scalar("SELECT source FROM optouts WHERE device = ?", (device,)) == "shopper"
        # Nowhere in the database is the raw MAC.
        for table in ("optouts", "pushback", "profile_events"):
            for row in conn.all(f"SELECT * FROM {table}"):
                assert "3c22fb" not in json.dumps(row).lower().replace(":", "").replace("-", "")
    cursors = {}
    for hub in HUBS:
        path = "/api/v1/sync/pushback?since=0"
        r = central.get(path, headers=signed_get(hub, secrets_[hub], path))
        assert r.status_code == 200
        assert [(i["kind"], i["device"]) for i in r.json()["items"]] == [("optout", device)]
        cursors[hub] = r.json()["cursor"]
        path = f"/api/v1/sync/pushback?since={cursors[hub]}"
        assert central.get(path, headers=signed_get(hub, secrets_[hub], path)).json()["items"] == []
    # A later batch about the device is dropped, and counted.
    r = post(central, "store-2", secrets_["store-2"], "o2", 1, [profile_record(device)])
    assert r.json()["accepted"] == 0
    with database.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM profiles WHERE device = ?", (device,)) == 0
    # The pushback poll is signed too: an unsigned or tampered query is refused.
    assert central.get("/api/v1/sync/pushback?since=0").status_code == 401
    h = signed_get("store-1", secrets_["store-1"], "/api/v1/sync/pushback?since=0")
    assert central.get("/api/v1/sync/pushback?since=5", headers=h).status_code == 401


def test_pushback_addresses_store_or_chain(central: TestClient, secrets_: dict[str, str], database: Database):
    with database.connect() as conn:
        key = auth.create_api_key(conn, "mk", role="marketing", stores=["store-2"])
    h = {"X-API-Key": key}
    r = central.post(
        "/api/v1/pushback",
        json={"kind": "scenario_settings", "id": "o2o-1", "body": {"control_share": 0.2}, "store": "store-2"},
        headers=h,
    )
    assert r.status_code == 201
    # A store-limited manager may not address the chain or another store.
    assert (
        central.post(
            "/api/v1/pushback", json={"kind": "segment_definition", "id": "s", "body": {}}, headers=h
        ).status_code
        == 403
    )
    assert (
        central.post(
            "/api/v1/pushback",
            json={"kind": "segment_definition", "id": "s", "body": {}, "store": "store-1"},
            headers=h,
        ).status_code
        == 403
    )
    admin = _admin(database)
    rule = {"all": [{"field": "dwell_s", "op": "<", "value": 300}]}
    assert (
        central.post(
            "/api/v1/pushback",
            json={"kind": "segment_definition", "id": "short", "body": {"rule": rule}},
            headers=admin,
        ).status_code
        == 201
    )
    got = {}
    for hub in HUBS:
        path = "/api/v1/sync/pushback?since=0"
        got[hub] = central.get(path, headers=signed_get(hub, secrets_[hub], path)).json()["items"]
    assert [i["kind"] for i in got["store-2"]] == ["scenario_settings", "segment_definition"]
    assert got["store-2"][0]["settings"] == {"control_share": 0.2}
    assert [i["kind"] for i in got["store-1"]] == ["segment_definition"]
    assert got["store-1"][0]["definition"] == {"rule": rule} and got["store-1"][0]["id"] == "short"


def test_hub_health_from_daily_aggregates(central: TestClient, secrets_: dict[str, str], database: Database):
    hub, secret = "store-3", secrets_["store-3"]

    def day(d: str, sensors: list[str]) -> dict:
        return {
            "kind": "daily_aggregate",
            "key": f"{hub}|{d}",
            "data": {
                "day": d,
                "visitors": 5,
                "passersby": 5,
                "sensor_health": {
                    "sensors_reporting": len(sensors),
                    "sensors": {s: {"presence_reports": 10} for s in sensors},
                },
            },
        }

    post(central, hub, secret, "d1", 1, [day("2026-11-19", ["s1", "s2", "s3"]), day("2026-11-20", ["s1", "s3"])])
    stores = {s["hub_id"]: s for s in central.get("/api/v1/stores", headers=_admin(database)).json()["stores"]}
    assert stores[hub]["sensors"]["total"] == 3 and stores[hub]["sensors"]["stale"] == 1
    assert stores["store-1"]["last_sync"] is None
    metrics = central.get("/metrics").text
    assert 'footfall_central_hub_last_sync_age_seconds{hub="store-1"} -1' in metrics
    assert "footfall_central_profiles 0" in metrics


def test_concurrent_batches_from_hubs_over_http(database: Database, secrets_: dict[str, str]):
    """Three hubs posting at once over real HTTP, the same devices in every batch: all apply
    (no deadlock, no lost update), each exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from footfall.cloud_sync.central.testing import ServerThread

    devices = [f"{i:032x}" for i in range(300)]
    with ServerThread(create_app(CentralConfig(), db=database)) as server:

        def send(args: tuple[str, int]) -> int:
            hub, n = args
            records = [profile_record(d, visits=n + 1, last_seen=1_790_003_600.0 + n) for d in devices]
            body, headers = signed_batch(hub, secrets_[hub], f"{hub}-{n}", n + 1, records)
            return requests.post(server.url + BATCHES, data=body, headers=headers, timeout=30).status_code

        jobs = [(hub, n) for n in range(3) for hub in HUBS]
        with ThreadPoolExecutor(max_workers=6) as pool:
            assert list(pool.map(send, jobs)) == [200] * len(jobs)
    with database.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM applied_batches") == 9
        assert conn.scalar("SELECT COUNT(*) FROM profiles WHERE stores = 3 AND visits = 9") == 300


def test_retention_keeps_only_the_fact_of_withdrawal(database: Database):
    from footfall.cloud_sync.central import consent

    day = 86400.0
    now = 1_800_000_000.0
    old, new = "a" * 32, "b" * 32
    with database.connect() as conn:
        conn.execute("INSERT INTO hubs (hub_id, secret, created) VALUES ('s', 'x', 0)")
    records = [
        profile_record(
            old, first_seen=now - 500 * day, last_seen=now - 450 * day, consent={"pd": True}, phone_md5="c" * 32
        ),
        profile_record(new, first_seen=now - 5 * day, last_seen=now - day),
    ]
    apply.apply_batch(database, "s", {"batch_id": "r", "seq": 1, "records": records}, now=now - 400 * day)
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO segment_versions (segment_id, version, ts, size, delta, members_csv) "
            "VALUES (?, 1, ?, 2, 2, ?)",
            ("all", now - 400 * day, f"device\n{old}\n{new}\n"),
        )
        profiles.add_event(conn, new, "visit", now - 100 * day, store="s")
        profiles.add_event(conn, new, "visit", now - 2 * day, store="s")
        consent.withdraw_consent(conn, old, ts=now - 420 * day)
        out = consent.enforce_retention(conn, consent.Retention(events_days=30, profiles_days=365), now=now)
        assert out["profiles"] == 1 and out["events"] == 1
        assert [r[0] for r in conn.all("SELECT device FROM profiles")] == [new]
        assert conn.scalar("SELECT COUNT(*) FROM identifiers WHERE device = ?", (old,)) == 0
        assert conn.scalar("SELECT COUNT(*) FROM profile_events WHERE device = ?", (new,)) == 1
        # Only the fact and date of the withdrawal remain of the expired profile.
        assert conn.all("SELECT pd_consent, given, withdrawn FROM consents WHERE device = ?", (old,)) == [
            (0, None, now - 420 * day)
        ]
        assert conn.scalar("SELECT COUNT(*) FROM applied_batches") == 0  # older than 30 days
        # An old recount keeps its size, not its member list.
        assert conn.one("SELECT size, members_csv FROM segment_versions") == (2, "device\n")
