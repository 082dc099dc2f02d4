"""The fast sync path keeps every rule: typed decoding (msgspec) of batches at the centre, bulk
events and personal identifiers, admission control, several service processes, and the hub
forming its next batch while the last one is in flight.

Central tests run against SQLite and a real PostgreSQL (the fixtures of
``test_central_sync.py``); the hub tests use the verifying test centre of ``test_sync.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.cloud_sync import outbox
from footfall.cloud_sync.central import auth, profiles, validation, wire
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread, free_port, profile_record, signed_batch
from footfall.cloud_sync.sender import Sender
from tests import test_central_sync as shared
from tests.test_sync import SECRET, config, enqueue, make_hub

database = shared.database
pg_url = shared.pg_url
central_hub = "store-1"
BATCHES = "/api/v1/sync/batches"
DEV = "0123456789abcdef0123456789abcdef"
NOW = 1_790_100_000.0


def both_plans(records: list[Any]) -> tuple[validation.Plan, validation.Plan] | None:
    """The plan of ``records`` decoded the fast way and the plain way (None when the typed
    decoder does not take the body at all: the centre then only has the plain way)."""
    raw = json.dumps({"v": 1, "hub": "s", "batch_id": "b", "seq": 1, "records": records}).encode()
    typed = wire.decode_envelope(raw)
    if typed is None:
        return None
    plain = json.loads(raw)["records"]
    return validation.plan_records("s", typed["records"], now=NOW), validation.plan_records("s", plain, now=NOW)


def plan_view(plan: validation.Plan) -> dict[str, Any]:
    return {
        "result": plan.result,
        "devices": plan.devices,
        "profiles": plan.profiles,
        "personal": plan.personal,
        "events": plan.events,
        "ops": [i for i, _ in plan.ops],
    }


# Anything a hub (or something else) might put in a field.
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "5", DEV, "a b", "ok\n", "ключ", "0" * 129]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.booleans()), max_size=3),
    st.dictionaries(
        st.sampled_from(["name", "kind", "since"]), st.one_of(st.text(max_size=4), st.integers(), st.none())
    ),
)
fields = st.sampled_from(
    ["device", "first_seen", "last_seen", "visits", "dwell_s", "dwell_total_s", "dwell_median_s", "cluster",
     "segments", "updated", "phone_md5", "partner_hash", "consent", "consent_granted", "consent_source", "site"]
)  # fmt: skip


def good_profile(i: int) -> dict[str, Any]:
    return {
        "device": f"{i:032x}",
        "site": "s",
        "first_seen": 1_790_000_000.5 + i,
        "last_seen": 1_790_003_600.25 + i,
        "visits": 3,
        "dwell_total_s": 900.0,
        "dwell_median_s": 300.0,
        "cluster": "lunch-time regulars",
        "segments": [{"name": "cluster: lunch-time regulars", "kind": "cluster", "since": 1.0}, "loyal", 7],
        "partner_hash": None,
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(fields, values), max_size=6), st.sampled_from(["profile", "event", "segment_change"]))
def test_typed_and_plain_decoding_give_the_same_plan(changes: list[tuple[str, Any]], kind: str) -> None:
    """Whatever a record holds, the typed path accepts exactly what the per-field checks accept,
    builds the same rows and refuses with the same reasons."""
    data: dict[str, Any] = good_profile(1)
    if kind != "profile":
        data = {"device": DEV, "type": "visit", "ts": 5.0, "segment": "loyal", "change": "enter"}
    for name, value in changes:
        data[name] = value
    records = [
        {"kind": kind, "key": f"{2:032x}", "data": data},
        {"kind": "profile", "key": "k", "data": good_profile(3)},
    ]
    plans = both_plans(records)
    if plans is None:
        # Only a body strict JSON refuses (NaN and infinities, which json.dumps writes) misses
        # the typed decoder; it takes the plain way whole.
        assert any(isinstance(v, float) and not math.isfinite(v) for _, v in changes)
        return
    typed, plain = plans
    assert plan_view(typed) == plan_view(plain)


def test_refused_profile_records_keep_their_reasons() -> None:
    cases = {
        "first_seen must be a number": {"first_seen": "yesterday"},
        "last_seen is required": {"last_seen": None},
        "last_seen is before first_seen": {"last_seen": 1.0},
        "visits must be a number": {"visits": True},
        "dwell_total_s must be a number": {"dwell_total_s": "long"},
        "segments must be a list": {"segments": "loyal"},
        "segments must be names or objects with a name": {"segments": [{"kind": "rule"}]},
        "cluster must be a string": {"cluster": 1.5},
        "device must be 1-128 characters": {"device": "not a device!"},
        "phone_md5 must be 32 hex digits": {"phone_md5": "12345", "consent_granted": 1.0},
    }
    records = [{"kind": "profile", "key": "x", "data": good_profile(i) | change} for i, change in
               enumerate(cases.values())]  # fmt: skip
    typed, plain = both_plans(records)
    assert typed.result.rejected == len(cases) and not typed.profiles and not typed.personal
    for (reason, _), error in zip(cases.items(), typed.result.errors, strict=True):
        assert reason in error
    assert typed.result.errors == plain.result.errors


def test_bad_records_are_refused_one_by_one_over_http(central: Any, database: Database) -> None:
    secret = central.secrets[central_hub]
    good = [profile_record(f"{i:032x}", dwell_total_s=60.0) for i in range(3)]
    bad = [
        # Each of these made the whole batch fail with a 500 (retried forever) before.
        profile_record(DEV, visits=None),
        profile_record(DEV, dwell_total_s=None),
        profile_record(DEV, updated=None),
        profile_record(DEV, visits=float("inf")),  # "Infinity": this batch takes the plain JSON way
        # A record whose phone hash is malformed is refused whole: its profile is not stored.
        profile_record(DEV, phone_md5="not-a-hash", consent_granted=1.0),
    ]
    body, headers = signed_batch(central_hub, secret, "mixed", 1, [*good, *bad])
    r = central.client.post(BATCHES, content=body, headers=headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 3 and answer["rejected"] == 5
    joined = " ".join(answer["errors"])
    for reason in ("visits must be a number", "dwell_total_s must be a number", "updated must be a number",
                   "phone_md5 must be 32 hex digits"):  # fmt: skip
        assert reason in joined
    with database.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM profile_stores") == 3
        assert conn.scalar("SELECT COUNT(*) FROM profile_stores WHERE device = ?", (DEV,)) == 0


class _Central:
    def __init__(self, client: Any, secrets: dict[str, str]) -> None:
        self.client = client
        self.secrets = secrets


@pytest.fixture
def central(database: Database) -> Any:
    from fastapi.testclient import TestClient

    with database.connect() as conn:
        secrets = {h: auth.add_hub(conn, h) for h in ("store-1", "store-2")}
    with TestClient(create_app(CentralConfig(), db=database)) as client:
        yield _Central(client, secrets)


def test_events_in_bulk_are_applied_once(central: Any, database: Database) -> None:
    secret = central.secrets[central_hub]
    other = "fedcba98765432100123456789abcdef"
    records = [
        {"kind": "event", "key": "visit:a", "data": {"device": DEV, "type": "visit", "ts": 10.0, "zone": "floor"}},
        # The same key again in the batch: the first wins, as one by one.
        {"kind": "event", "key": "visit:a", "data": {"device": DEV, "type": "visit", "ts": 10.0, "zone": "door"}},
        {"kind": "event", "key": "coupon:c1", "data": {"device": other, "type": "coupon_issued", "ts": 11.0}},
        {
            "kind": "segment_change",
            "key": "s|a",
            "data": {"device": DEV, "segment": "loyal", "change": "enter", "ts": 12.0},
        },  # fmt: skip
        {"kind": "event", "key": "bad", "data": {"device": DEV, "type": "teleport", "ts": 1.0}},
    ]
    with database.connect() as conn:
        conn.execute("INSERT INTO optouts (device, ts, source) VALUES (?, 0, 'test')", (other,))
    body, headers = signed_batch(central_hub, secret, "ev-1", 1, records)
    answer = central.client.post(BATCHES, content=body, headers=headers).json()
    assert (answer["accepted"], answer["rejected"]) == (3, 1)
    # Re-cut under a new batch id: event keys make it a no-op.
    body, headers = signed_batch(central_hub, secret, "ev-2", 2, records)
    assert central.client.post(BATCHES, content=body, headers=headers).status_code == 200
    with database.connect() as conn:
        rows = conn.all("SELECT device, kind, data FROM profile_events ORDER BY kind")
    assert [(d, k) for d, k, _ in rows] == [(DEV, "segment_entry"), (DEV, "visit")]
    assert json.loads(rows[0][2]) == {"segment": "loyal"} and json.loads(rows[1][2]) == {"zone": "floor"}
    assert 'footfall_central_records_total{outcome="dropped_optout"} 2' in central.client.get("/metrics").text


def test_personal_identifiers_in_bulk_follow_record_order(central: Any, database: Database) -> None:
    secret = central.secrets[central_hub]
    other = "fedcba98765432100123456789abcdef"
    phone, phone2, mac = "a" * 32, "c" * 32, "b" * 32
    records = [
        # No consent yet when this record is read: its phone hash is dropped ...
        profile_record(DEV, phone_md5=phone),
        # ... even though a later record of the same batch brings one.
        profile_record(DEV, phone_md5=phone2, partner_hash=mac, consent_granted=100.0, last_seen=1_790_009_000.0),
        profile_record(other, phone_md5="d" * 32, consent_granted=50.0, consent_source="partner"),
    ]
    body, headers = signed_batch(central_hub, secret, "pd-1", 1, records)
    assert central.client.post(BATCHES, content=body, headers=headers).status_code == 200
    with database.connect() as conn:
        ids = conn.all("SELECT device, type, value, active FROM identifiers WHERE type <> 'mac_hash' ORDER BY 1, 2")
        consents = conn.all("SELECT device, pd_consent, given, source FROM consents ORDER BY device")
    assert ids == [(DEV, "mac_md5", mac, 1), (DEV, "phone_md5", phone2, 1), (other, "phone_md5", "d" * 32, 1)]
    assert consents == [(DEV, 1, 100.0, "hub"), (other, 1, 50.0, "partner")]
    assert 'footfall_central_records_total{outcome="dropped_no_consent"} 1' in central.client.get("/metrics").text
    # A new phone hash for the device: the old one is kept, inactive (one active per type).
    body, headers = signed_batch(central_hub, secret, "pd-2", 2, [profile_record(DEV, phone_md5=phone)])
    assert central.client.post(BATCHES, content=body, headers=headers).status_code == 200
    with database.connect() as conn:
        active = conn.all("SELECT value, active FROM identifiers WHERE device = ? AND type = 'phone_md5' ORDER BY 1",
                          (DEV,))  # fmt: skip
    assert active == [(phone, 1), (phone2, 0)]


def test_busy_centre_answers_503_instead_of_queueing_past_the_hub_timeout(database: Database) -> None:
    with database.connect() as conn:
        secret = auth.add_hub(conn, central_hub)
    cfg = CentralConfig(sync_concurrency=1, sync_wait_s=0.5)
    answers: dict[str, requests.Response] = {}
    with ServerThread(create_app(cfg, db=database)) as server:
        blocker = database.open()
        # An erasure holds the write lock (SQLite: any write transaction): a batch being applied waits.
        if blocker.postgres:
            blocker.raw.execute("BEGIN")
            profiles.write_lock(blocker, exclusive=True)
        else:
            blocker.raw.execute("BEGIN IMMEDIATE")

        def send(batch_id: str) -> None:
            body, headers = signed_batch(central_hub, secret, batch_id, 1, [profile_record(DEV)])
            answers[batch_id] = requests.post(server.url + BATCHES, data=body, headers=headers, timeout=30)

        first = threading.Thread(target=send, args=("first",))
        first.start()
        # The first holds the only slot once it waits for the lock.
        deadline = time.monotonic() + 20
        if blocker.postgres:
            while not blocker.scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        else:
            time.sleep(1.0)
        send("second")
        assert answers["second"].status_code == 503 and answers["second"].json()["reason"] == "busy"
        assert answers["second"].headers["Retry-After"] == "10"
        blocker.raw.execute("ROLLBACK")
        first.join(30)
        assert answers["first"].status_code == 200
        send("second")  # a slot is free again
        assert answers["second"].status_code == 200
        metrics = requests.get(server.url + "/metrics", timeout=5).text
    blocker.close()
    assert 'footfall_central_batches_rejected_total{reason="busy"} 1' in metrics


def test_serve_with_several_worker_processes(database: Database, tmp_path: Path) -> None:
    with database.connect() as conn:
        secrets = {h: auth.add_hub(conn, h) for h in ("w-1", "w-2", "w-3")}
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "footfall",
            "central",
            "serve",
            "--db",
            database.url,
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the service did not start"
            time.sleep(0.1)
        codes: list[int] = []

        def run(name: str) -> None:
            for n in range(4):
                records = [profile_record(f"{n:04d}{i:028x}", visits=n + 1) for i in range(50)]
                for _ in range(2):  # each batch twice (freshly signed): the second is a duplicate
                    body, headers = signed_batch(name, secrets[name], f"{name}-{n}", n + 1, records)
                    codes.append(requests.post(url + BATCHES, data=body, headers=headers, timeout=30).status_code)

        threads = [threading.Thread(target=run, args=(name,)) for name in secrets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 24
    finally:
        proc.terminate()
        proc.wait(20)
    with database.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM applied_batches") == 12
        assert dict(conn.all("SELECT hub_id, records FROM hubs")) == {h: 200 for h in secrets}
        assert conn.scalar("SELECT COUNT(*) FROM profile_stores") == 600


# -- hub side -----------------------------------------------------------------------------------


@pytest.fixture
def hub_central() -> Any:
    from tests.test_sync import SITE, Central

    c = Central({SITE: SECRET}).start()
    yield c
    c.stop()


def test_next_batch_is_formed_while_one_is_in_flight(tmp_path: Path, hub_central: Any) -> None:
    conn = make_hub(tmp_path / "hub.db")
    enqueue(conn)
    expected = {(r[0], r[1]) for r in conn.execute("SELECT kind, key FROM sync_outbox")}
    sender = Sender(conn, config(tmp_path / "hub.db", hub_central.url, batch_records=10), SECRET)
    assert sender.send_once().status == "sent"  # nothing acknowledged before it: sent alone
    assert conn.execute("SELECT count(*) FROM sync_batches").fetchone()[0] == 0
    out = sender.send_once()
    assert out.status == "sent"
    # Formed while that one was out, not sent yet: the next in seq, ready to go.
    ahead = [tuple(r) for r in conn.execute("SELECT seq, records FROM sync_batches")]
    assert ahead == [(out.seq + 1, 10)]
    assert sender.drain(max_attempts=3).ok
    delivered = hub_central.records()
    assert {(r["kind"], r["key"]) for r in delivered} == expected and len(delivered) == len(expected)
    assert hub_central.seqs == list(range(1, len(hub_central.applied) + 1))


@pytest.mark.parametrize("order", ["older first", "newer first"])
def test_recut_batch_gives_up_versions_a_later_batch_holds(tmp_path: Path, hub_central: Any, order: str) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=10)
    enqueue(conn)
    cfg = config(tmp_path / "hub.db", hub_central.url, batch_records=6)
    sender = Sender(conn, cfg, SECRET)
    first = sender.form_batch()
    key = conn.execute("SELECT key FROM sync_outbox WHERE batch_id = ? AND kind = 'profile' LIMIT 1",
                       (first.batch_id,)).fetchone()[0]  # fmt: skip
    with conn:  # a newer version of one of its records, queued behind it ...
        outbox.enqueue(conn, "profile", key, {"device": key, "first_seen": 1.0, "last_seen": 2.0, "visits": 99})
    n_before = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
    sender.max_records = 100
    second = sender._form_new(time.time())  # ... lands in the batch formed ahead
    assert (
        second is not None
        and conn.execute(
            "SELECT count(*) FROM sync_outbox WHERE batch_id = ? AND key = ?", (second.batch_id, key)
        ).fetchone()[0]
        == 1
    )
    # Both re-cut (as an opt-out touching both does), in either order: no clash of two pending
    # versions, and the older version is gone.
    with conn:
        for b in (first, second) if order == "older first" else (second, first):
            outbox.release_batch(conn, b.batch_id)
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == n_before - 1
    assert sender.drain(max_attempts=3).ok
    sent = [r for r in hub_central.records() if r["key"] == key and r["kind"] == "profile"]
    assert [r["data"]["visits"] for r in sent] == [99]
