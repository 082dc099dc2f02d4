"""Central segments and exports: rules compile to parameterised SQL, recounts are versioned,
exports follow the data-supplier format, the CDP push reaches a real reference CDP."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
import requests

from footfall.cloud_sync.central import apply, cdp, consent, export, profiles, segments
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread, profile_record
from footfall.tools.reference_cdp import create_app as create_cdp
from tests import test_central_sync as shared

# The SQLite / PostgreSQL fixtures, shared with the sync tests.
database = shared.database
pg_url = shared.pg_url

NOW = 1_790_000_000.0
DAY = 86400.0


def dev(i: int) -> str:
    return f"{i:032x}"


def load(db: Database, store: str, records: list[dict], batch_id: str | None = None) -> None:
    batch = {"batch_id": batch_id or f"{store}-{time.monotonic_ns()}", "seq": 1, "records": records}
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO hubs (hub_id, secret, created) VALUES (?, 'x', 0) ON CONFLICT (hub_id) DO NOTHING", (store,)
        )
    apply.apply_batch(db, store, batch, now=NOW)


def seen(i: int, days_ago: float, **kw) -> dict:
    t = NOW - days_ago * DAY
    return profile_record(dev(i), first_seen=t - 600, last_seen=t, **kw)


def test_rule_errors_name_the_condition():
    bad = [
        ({"field": "nope", "op": ">", "value": 1}, "unknown field"),
        ({"all": [{"field": "visits", "op": "~", "value": 1}]}, "rule.all[0]"),
        ({"field": "visits", "op": ">", "value": "1; DROP TABLE profiles"}, "number"),
        ({"field": "events", "op": ">=", "value": 1, "kind": "visit"}, "days is required"),
        ({"field": "store", "op": "in", "value": []}, "non-empty"),
        ({"all": []}, "non-empty"),
        (
            {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"field": "visits", "op": ">", "value": 1}}}}}}}},
            "deeper",
        ),
    ]
    for rule, message in bad:
        with pytest.raises(segments.RuleError, match=message.replace("[", r"\[").replace("]", r"\]")):
            segments.compile_rule(rule)
    compiled = segments.compile_rule({"field": "segment", "op": "=", "value": "it's 100%_"}, stores=["a"])
    assert "it's" not in compiled.sql and "100" not in compiled.sql
    assert '%"it\'s 100!%!_"%' in compiled.params


def test_cross_store_segment_recount_versions(database: Database):
    # dev 1: stores a and b within 30 days; dev 2: a and b but b 40 days ago; dev 3: one store
    load(database, "a", [seen(1, 2), seen(2, 1), seen(3, 1, visits=5)])
    load(database, "b", [seen(1, 10), seen(2, 40)])
    with database.connect() as conn:
        rule = {"field": "stores_visited", "days": 30, "op": ">=", "value": 2}
        segments.create_segment(conn, "multi-store", "Visited 2+ stores in 30 days", rule)
        v1 = segments.recount(conn, "multi-store", now=NOW)
        assert (v1.version, v1.size, v1.delta) == (1, 1, 1)
        assert segments.members(conn, "multi-store") == [dev(1)]
    load(database, "c", [seen(2, 3), seen(3, 3)])
    with database.connect() as conn:
        v2 = segments.recount(conn, "multi-store", now=NOW)
        assert (v2.version, v2.size, v2.delta) == (2, 3, 2)
        assert segments.members(conn, "multi-store", 1) == [dev(1)]
        assert segments.members(conn, "multi-store") == [dev(1), dev(2), dev(3)]
        assert [(v["version"], v["size"], v["delta"]) for v in segments.versions(conn, "multi-store")] == [
            (1, 1, 1),
            (2, 3, 2),
        ]
        # A store-scoped segment sees only its stores' figures.
        segments.create_segment(conn, "a-loyal", "", {"field": "visits", "op": ">=", "value": 5}, stores=["a"])
        assert segments.recount(conn, "a-loyal", now=NOW).size == 1
        segments.create_segment(conn, "b-only", "", {"field": "visits", "op": ">=", "value": 1}, stores=["b"])
        assert segments.recount(conn, "b-only", now=NOW).size == 2
        # Groups, negation, events, clusters, hub segments.
        profiles.add_event(conn, dev(3), "redemption", NOW - 5 * DAY, store="c")
        rule = {
            "any": [
                {"field": "events", "kind": "redemption", "days": 30, "op": ">=", "value": 1},
                {
                    "all": [
                        {"field": "store", "op": "=", "value": "b"},
                        {"not": {"field": "days_since_last_seen", "op": ">", "value": 1.5}},
                    ]
                },
            ]
        }
        segments.create_segment(conn, "mixed", "", rule)
        assert segments.recount(conn, "mixed", now=NOW).size == 2  # dev 3 (redemption), dev 2 (in b, seen 1 day ago)
        with pytest.raises(segments.RuleError, match="exists"):
            segments.create_segment(conn, "mixed", "", rule)


def _with_phones(database: Database, n: int, *, store: str = "a") -> None:
    records = [
        seen(i, 1, phone_md5=f"{i:032x}".replace("0", "f", 4), consent={"pd": True, "ts": NOW - DAY}) for i in range(n)
    ]
    records += [seen(n + 1, 1)]  # no consent, no phone
    load(database, store, records)


def test_supplier_csv_splits_and_warns(database: Database, tmp_path):
    _with_phones(database, 30)
    with database.connect() as conn:
        segments.create_segment(conn, "all", "", {"field": "visits", "op": ">=", "value": 1})
        segments.recount(conn, "all", now=NOW)
        result = export.supplier_csv(conn, "all", tmp_path / "out", max_bytes=7 + 33 * 10)
    assert result.count == 30
    assert [f.name for f in result.files] == ["all_001.csv", "all_002.csv", "all_003.csv"]
    hashes = []
    for f in result.files:
        assert f.stat().st_size <= 7 + 33 * 10
        lines = f.read_text().splitlines()
        assert lines[0] == "msisdn"
        hashes += lines[1:]
    assert len(hashes) == len(set(hashes)) == 30
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in hashes)
    assert "5000" in result.warnings[0]
    with database.connect() as conn:
        # "More than 5,000": a list of exactly the minimum is still refused by the platform.
        exact = export.supplier_csv(conn, "all", tmp_path / "exact", min_members=30)
        assert len(exact.warnings) == 1 and "more than 30" in exact.warnings[0]
        big = export.supplier_csv(conn, "all", tmp_path / "ok", min_members=29)
        assert big.warnings == [] and len(big.files) == 1
        # Withdrawn consent: the hash is gone from the next export, and so is the member's row.
        consent.withdraw_consent(conn, dev(0))
        assert export.supplier_csv(conn, "all", tmp_path / "after").count == 29


def test_generic_csv_and_json(database: Database):
    _with_phones(database, 3)
    with database.connect() as conn:
        segments.create_segment(conn, "all", "", {"field": "visits", "op": ">=", "value": 1})
        segments.recount(conn, "all", now=NOW)
        rows = list(csv.DictReader(io.StringIO(export.generic(conn, "all", "csv"))))
        doc = json.loads(export.generic(conn, "all", "json"))
    assert len(rows) == 4 and doc["count"] == 4
    by_dev = {r["device"]: r for r in rows}
    assert by_dev[dev(0)]["phone_md5"] and by_dev[dev(0)]["stores"] == "a"
    assert by_dev[dev(4)]["phone_md5"] == ""  # no consent: no phone hash
    assert "phone_md5" not in {p["device"]: p for p in doc["profiles"]}[dev(4)]


def test_cdp_push_to_reference_cdp(database: Database):
    _with_phones(database, 25)
    key = "cdp-test-key-0123456789"
    app = create_cdp(key, fail_first=1)
    with ServerThread(app) as server:
        cfg = cdp.CdpConfig(
            url=f"{server.url}/api/v1/profiles/import",
            api_key=key,
            mapping={"device": "external_id", "phone_md5": "phone_hash", "visits": "visit_count"},
            batch_size=10,
            backoff_s=0.01,
        )
        with database.connect() as conn:
            segments.create_segment(conn, "all", "All visitors", {"field": "visits", "op": ">=", "value": 1})
            segments.recount(conn, "all", now=NOW)
            result = cdp.push_segment(conn, "all", cfg)
            assert (result.queued, result.sent, result.batches, result.retries) == (26, 26, 3, 1)
            assert conn.scalar("SELECT COUNT(*) FROM export_items") == 0
        got = requests.get(f"{server.url}/api/v1/profiles", headers={"X-API-Key": key}, timeout=5).json()["profiles"]
        assert len(got) == 26 and {p["_segment"] for p in got} == {"All visitors"}
        p0 = next(p for p in got if p["external_id"] == dev(0))
        assert set(p0) == {"external_id", "phone_hash", "visit_count", "_segment"}
        assert "phone_hash" not in next(p for p in got if p["external_id"] == dev(26))
        # A wrong key is a configuration error: no retries, the rest stays queued.
        bad = cdp.CdpConfig(url=cfg.url, api_key="wrong", batch_size=10, backoff_s=0.01)
        with database.connect() as conn:
            with pytest.raises(cdp.CdpError, match="401"):
                cdp.push_segment(conn, "all", bad)
            queued = conn.scalar("SELECT COUNT(*) FROM export_items")
            assert queued == 26
            # Consent withdrawn while queued: that profile's queued row is deleted before sending.
            consent.withdraw_consent(conn, dev(1))
            export_id = conn.scalar("SELECT MIN(export_id) FROM export_items")
            resumed = cdp.resume(conn, export_id, cfg)
            assert resumed.sent == 25
    with pytest.raises(ValueError):
        cdp.CdpConfig(url="ftp://x", api_key="k")
