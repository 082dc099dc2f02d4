"""Issue 14 item 7, for real: unkeyed MD5s only where a scenario needs them (checked by scanning
the SQLite files and the export directory for the hash strings), every O2O artifact under
retention, and an opt-out that removes a person from the tables and from segment files that
were already written, through the sync pushback's own opt-out code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import requests

from footfall.cloud_sync import pushback_items
from footfall.hub import retention, store
from footfall.hub.config import HubConfig
from footfall.hub.o2o import adsegment, housekeeping, optout, privacy, register, runner, scenarios
from footfall.hub.o2o.cli import register_o2o
from footfall.hub.o2o.web import create_app
from footfall.tools import partner_server
from tests.test_o2o_adsegment import T0, add_passerby, mac, partner_db, subscriber_kind
from tests.test_o2o_e2e import PARTNER_KEY, Served, client_for

DAY = 86400.0


def at_rest(db: Path) -> bytes:
    """Every byte SQLite keeps for the database: the file and its WAL."""
    return b"".join(Path(f"{db}{s}").read_bytes() for s in ("", "-wal") if Path(f"{db}{s}").exists())


def files_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def device_of(conn, h: str) -> str:
    return conn.execute("SELECT device_key FROM visits WHERE partner_hash = ?", (h,)).fetchone()[0]


def add_sensor_visit(conn, h: str, device: str, at: float) -> None:
    conn.execute(
        "INSERT INTO sensor_visits (id, site, sensor, device, randomized, partner_hash, first_seen, last_seen, dwell_s,"
        " inside_s, sightings, class, long_stay, fingerprint, ie_ids, received)"
        " VALUES (?, 'st', 's1', ?, 0, ?, ?, ?, 40, 0, 3, 'passerby', 0, 'fp', '[]', ?)",
        (f"sv-{h[:8]}-{at}", device, h, at - 40, at, at),
    )


@pytest.fixture
def hub(tmp_path):
    """A hub database, the reference partner over HTTP and the O2O app, on one simulated clock."""
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    phones = partner_db(tmp_path / "partner.db", 64)
    partner = Served(partner_server.create_app(tmp_path / "partner.db", PARTNER_KEY))
    clock = [T0]
    app = Served(create_app(db, clock=lambda: clock[0]))
    ex = adsegment.ExportSettings(directory=tmp_path / "exports")
    sc = scenarios.Scenario(name="pass", target="passersby", control_share=0.0, quiet_hours=None)
    scenarios.add(conn, sc, now=T0 - 10 * DAY)
    try:
        yield conn, db, phones, client_for(partner.url), ex, app, clock
    finally:
        app.stop()
        partner.stop()
        conn.close()


def test_unkeyed_mac_md5_only_inside_the_scenario_window(hub):
    conn, db, phones, client, ex, _app, _clock = hub
    with conn:
        old = {i: add_passerby(conn, i, T0 - 3 * DAY) for i in range(12)}
        for h in old.values():
            add_sensor_visit(conn, h, device_of(conn, h), T0 - 3 * DAY)
        consented = add_passerby(conn, 12, T0 - 3 * DAY)
        conn.execute(
            "INSERT INTO consents (device, granted, withdrawn, source, updated) VALUES (?, ?, NULL, 'central', ?)",
            (device_of(conn, consented), T0 - 4 * DAY, T0 - 4 * DAY),
        )
        recent = {i: add_passerby(conn, i, T0 - 600) for i in range(20, 44)}
    raw = at_rest(db)
    assert all(h.encode() in raw for h in old.values())  # the scan does see a stored hash

    [res] = runner.run_due(conn, client, now=T0, export=ex)
    assert res.status == "ok" and res.counts["sent_to_partner"] == len(recent)
    subj = privacy.attach(conn)
    # Outside every scenario's window (first run: lookback 1 day): keyed in every table.
    stored = dict(conn.execute("SELECT device_key, partner_hash FROM devices"))
    for h in old.values():
        assert stored[device_of(conn, subj.key(h))] == subj.key(h)
    assert {r[0] for r in conn.execute("SELECT partner_hash FROM sensor_visits")} == {subj.key(h) for h in old.values()}
    # Targets done with the partner keep only the keyed form; nothing is left pending here.
    assert {r[0][:3] for r in conn.execute("SELECT partner_hash FROM o2o_targets")} == {"k1:"}
    data = at_rest(db)
    assert not [h for h in old.values() if h.encode() in data]
    assert consented.encode() in data  # a consented device's MAC MD5 is an identifier the centre holds
    assert all(h.encode() in data for h in recent.values())  # the visits the next run reads from
    exported = files_bytes(ex.directory)
    assert exported and not [h for h in (*old.values(), *recent.values()) if h.encode() in exported]
    assert {p for i, p in phones.items() if i in recent} and all(
        p.encode() in exported for i, p in phones.items() if i in recent
    )

    # A visit two days old arriving late (its sensor was offline) is keyed at the next pass;
    # a day and a half later, after one more run, the runner's window has moved past the rest.
    with conn:
        late = add_passerby(conn, 50, T0 - 2 * DAY)
    [res] = runner.run_due(conn, client, now=T0 + 1800, export=ex)
    assert not res.counts["candidates"] and late.encode() not in at_rest(db)
    result = retention.apply(conn, HubConfig(site="st"), now=T0 + 1.5 * DAY)
    assert result.o2o_error is None and result.o2o_hashes_keyed >= len(recent)
    data = at_rest(db)
    assert not [h for h in recent.values() if h.encode() in data]
    assert consented.encode() in data


def test_retention_deletes_old_artifacts(hub, tmp_path):
    conn, db, _phones, client, ex, app, clock = hub
    with conn:
        for i in range(16):
            add_passerby(conn, i, T0 - 600)
    [res] = runner.run_due(conn, client, now=T0, export=ex)
    token = res.links[0]["token"]
    # A per-run delta file of the version before snapshots, its link long expired.
    legacy = ex.directory / "scenario-1" / "run-1-001.csv"
    legacy.write_text("mac_md5,msisdn\r\n" + "0" * 32 + ",\r\n")
    with conn:
        conn.execute(
            "INSERT INTO o2o_exports (scenario_id, run_id, created, files, rows, link_hash, link_expires, link_status)"
            " VALUES (1, 1, ?, ?, 1, 'x', ?, 'shared')",
            (T0 - 10 * DAY, json.dumps([{"path": str(legacy), "rows": 1, "bytes": 50}]), T0 - 7 * DAY),
        )
    optout.forget(conn, [hashlib.md5(b"complaint").hexdigest()], reason="complaint", now=T0)
    conn.commit()
    assert legacy.exists() and len(list(ex.directory.rglob("snapshot-*.csv"))) == 1

    # The hub's hourly retention: the expired legacy file goes, the current snapshot stays.
    result = retention.apply(conn, HubConfig(site="st"), now=T0 + 60)
    assert not legacy.exists() and result.o2o_files_deleted == 1
    assert len(list(ex.directory.rglob("snapshot-*.csv"))) == 1
    # Not refreshed for a day (runner stopped): the snapshot's members may have left the window.
    clock[0] = T0 + 1.1 * DAY
    result = retention.apply(conn, HubConfig(site="st"), now=clock[0])
    assert list(ex.directory.rglob("*.csv")) == [] and result.o2o_files_deleted == 1
    assert requests.get(f"{app.url}/api/o2o/segments/{token}", timeout=5).status_code == 410

    # Three years on (the link: three years after it expired), the records of it all go too.
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in
              ("o2o_transfers", "o2o_snapshots", "o2o_share_links", "o2o_stoplist", "o2o_exports")}  # fmt: skip
    assert all(counts.values()), counts
    result = retention.apply(conn, HubConfig(site="st"), now=T0 + 3 * 365 * DAY + 4 * DAY)
    assert result.o2o_records_deleted == sum(counts.values())
    assert all(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0 for t in counts)
    with pytest.raises(ValueError):
        housekeeping.O2ORetention(register_days=0)


def test_optout_removes_the_person_from_tables_and_written_files(hub, tmp_path):
    conn, db, phones, client, ex, app, clock = hub
    with conn:
        hashes = {i: add_passerby(conn, i, T0 - 600) for i in range(24)}
    [res] = runner.run_due(conn, client, now=T0, export=ex)
    token = res.links[0]["token"]
    members = {phones[i] for i in hashes if i in phones}
    assert res.snapshot["rows"] == len(members) >= 4
    person = next(i for i in hashes if subscriber_kind(i) == "segment")
    mac_h, phone_h = hashes[person], phones[person]
    device = device_of(conn, mac_h)
    # A delta file from the version before snapshots, still offered: it names the person too.
    legacy = ex.directory / "scenario-1" / "run-0-001.csv"
    legacy.write_text(f"mac_md5,msisdn\r\n{mac_h},{phone_h}\r\n{'1' * 32},\r\n")
    with conn:
        conn.execute(
            "INSERT INTO o2o_exports (scenario_id, run_id, created, files, rows, link_hash, link_expires, link_status)"
            " VALUES (1, 0, ?, ?, 2, 'y', ?, 'shared')",
            (T0, json.dumps([{"path": str(legacy), "rows": 2, "bytes": 90}]), T0 + DAY),
        )
    assert phone_h.encode() in files_bytes(ex.directory) and phone_h.encode() in at_rest(db)

    # The centre's opt-out, applied by the sync's own code, which calls the O2O hook in its
    # transaction: a second call finds nothing left of the person.
    with conn:  # a visit the hub's estimate counted (the return rate's earlier visits)
        conn.execute("INSERT INTO estimated_visitors (device_key, day) VALUES (?, '2026-10-26')", (device,))
    keys = sorted(pushback_items.linked_keys(conn, device))
    with conn:
        pushback_items.apply_optout(conn, device, ts=T0, now=T0 + 60)
        res = optout.forget_devices(conn, keys, now=T0 + 60)
    assert (res.files_rewritten, res.rows_removed, res.segment_rows) == (0, 0, 0)
    assert conn.execute("SELECT count(*) FROM estimated_visitors WHERE device_key = ?", (device,)).fetchone()[0] == 0

    subj = privacy.attach(conn)
    exported = files_bytes(ex.directory)
    assert phone_h.encode() not in exported and mac_h.encode() not in exported
    snap = conn.execute("SELECT * FROM o2o_snapshots ORDER BY id DESC LIMIT 1").fetchone()
    files = json.loads(snap["files"])
    data = b"".join(Path(f["path"]).read_bytes() for f in files)
    assert snap["rows"] == len(members) - 1 and snap["purged_rows"] == 1
    assert hashlib.sha256(data).hexdigest() == snap["sha256"] and len(data) == snap["bytes"]
    r = requests.get(f"{app.url}/api/o2o/segments/{token}", timeout=5)
    assert r.status_code == 200 and phone_h not in r.text and len(r.text.split("\r\n")) - 2 == len(members) - 1
    stop = {r[0] for r in conn.execute("SELECT subject FROM o2o_stoplist")}
    assert {subj.key(mac_h), subj.key(phone_h)} <= stop and all(s.startswith("k1:") for s in stop)
    assert conn.execute("SELECT count(*) FROM o2o_segment_rows WHERE msisdn_md5 = ?", (phone_h,)).fetchone()[0] == 0
    t = conn.execute("SELECT partner_hash, phone_md5 FROM o2o_targets WHERE device_key = ?", (device,)).fetchone()
    assert t["partner_hash"] == subj.key(mac_h) and t["phone_md5"] is None
    [erasure] = [e for e in register.entries(conn, 0, 2e9) if e["kind"] == "erasure"]
    assert erasure["count"] == 2

    # The next run neither brings the person back nor leaves the hashes at rest.
    with conn:
        add_passerby(conn, person, T0 + 1000)  # back in front of the store, with the same MAC
    clock[0] = T0 + 1800
    [res] = runner.run_due(conn, client, now=T0 + 1800, export=ex)
    assert res.counts["opted_out"] == 1 and res.snapshot["rows"] == len(members) - 1
    data = at_rest(db)
    assert phone_h.encode() not in data
    assert mac_h.encode() in data  # only in today's new visit, inside the window
    assert mac_h.encode() not in files_bytes(ex.directory) and phone_h.encode() not in files_bytes(ex.directory)

    # A local opt-out by phone hash: the CLI removes it from the files as well.
    other = next(i for i in hashes if subscriber_kind(i) == "segment" and i != person)
    parser = argparse.ArgumentParser()
    register_o2o(parser.add_subparsers())
    args = parser.parse_args(["o2o", "stop", "add", phones[other], "--db", str(db), "--reason", "complaint"])
    assert args.func(args) == 0
    assert phones[other].encode() not in files_bytes(ex.directory)
    bad = parser.parse_args(["o2o", "stop", "add", "not-a-hash", "--db", str(db)])
    assert bad.func(bad) == 2
    args = parser.parse_args(["o2o", "stop", "remove", phones[other], "--db", str(db)])
    assert args.func(args) == 0
    assert subj.key(phones[other]) not in {r[0] for r in conn.execute("SELECT subject FROM o2o_stoplist")}


def test_a_missing_subject_key_is_an_error_not_a_new_key(hub, tmp_path, caplog):
    conn, db, _phones, client, ex, _app, _clock = hub
    with conn:
        add_passerby(conn, 1, T0 - 3 * DAY)
    [res] = runner.run_due(conn, client, now=T0, export=ex)
    key = privacy.key_path(conn)
    saved = key.read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600
    key.unlink()
    with pytest.raises(privacy.PrivacyError, match="missing"):
        runner.run_due(conn, client, now=T0 + 1800, export=ex)
    # Ingest's hourly retention goes on, and says why the O2O part did not run.
    result = retention.apply(conn, HubConfig(site="st"), now=T0 + 1800)
    assert result.o2o_error and "missing" in result.o2o_error and not key.exists()
    key.write_text("ab" * 32)
    with pytest.raises(privacy.PrivacyError, match="not the key"):
        privacy.attach(conn)
    key.write_bytes(saved)
    assert privacy.attach(conn).key(hashlib.md5(mac(1).encode()).hexdigest()).startswith("k1:")
