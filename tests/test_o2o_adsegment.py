"""The ad-platform segment for real: inserted visits, the reference partner over HTTP, many
30-minute runs, the share link served by the hub's O2O app on a real uvicorn server.

Checks the issue's complaints one by one: one accumulated segment per scenario that grows
(not per-run deltas), full snapshots in the seed's format (``msisdn``, lowercase MD5, split
under the size limit), no row without an identifier, bounded files and links on disk, expired
links refused, and the register recording each snapshot as the files really are.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from footfall.hub import store
from footfall.hub.o2o import adsegment, register, runner, scenarios
from footfall.hub.o2o.web import create_app
from footfall.tools import partner_server
from tests.test_o2o_e2e import PARTNER_KEY, Served, client_for

DAY = 86400.0
T0 = 1_800_000_000.0  # a fixed simulated clock, far from the test machine's
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def mac(i: int) -> str:
    return f"00:1A:2B:00:{i // 256:02X}:{i % 256:02X}"  # globally administered: partner-matchable


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def add_passerby(conn, i: int, at: float) -> str:
    """One passer-by visit of global MAC ``i`` ending at ``at``, as ingest stores it."""
    h = partner_server.mac_md5(mac(i))
    device = hashlib.sha256(f"dev{i}".encode()).hexdigest()[:32]
    day = datetime.fromtimestamp(at, UTC)
    conn.execute(
        "INSERT INTO visits (site, device, device_key, randomized, partner_hash, first_seen, last_seen, dwell_s,"
        " inside_s, class, long_stay, excluded, best_sensor, best_rssi, sensors, n_sensor_visits, day, hour)"
        " VALUES ('st', ?, ?, 0, ?, ?, ?, 40, 0, 'passerby', 0, 0, 's1', -70, 's1', 1, ?, ?)",
        (device, device, h, at - 40, at, day.date().isoformat(), day.hour),
    )
    conn.execute(
        "INSERT INTO devices (device_key, randomized, partner_hash, first_seen, last_seen, visit_count, total_dwell_s)"
        " VALUES (?, 0, ?, ?, ?, 1, 40) ON CONFLICT (device_key) DO UPDATE SET last_seen = excluded.last_seen",
        (device, h, at - 40, at),
    )
    return h


def subscriber_kind(i: int) -> str:
    # Known and messageable / known, not messageable, phone shared / known, no phone / unknown.
    return ("sms", "segment", "no_phone", "unknown")[i % 4]


def partner_db(path: Path, n: int) -> dict[int, str]:
    """Subscribers for MACs 0..n-1 by :func:`subscriber_kind`; returns i -> phone MD5 of segment members."""
    pconn = partner_server.connect(path)
    phones = {}
    for i in range(n):
        kind = subscriber_kind(i)
        if kind == "unknown":
            continue
        phone = f"+7900{i:07d}"
        pconn.execute(
            "INSERT INTO subscribers (mac_md5, phone, phone_md5, messageable, share_phone) VALUES (?, ?, ?, ?, ?)",
            (partner_server.mac_md5(mac(i)), phone, md5(phone), kind == "sms", kind != "no_phone"),
        )
        if kind == "segment":
            phones[i] = md5(phone)
    pconn.close()
    return phones


def csv_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.csv"))


def read_rows(paths: list[Path]) -> list[str]:
    out = []
    for p in paths:
        lines = p.read_bytes().decode().split("\r\n")
        assert lines[0] == "msisdn" and lines[-1] == ""
        out += lines[1:-1]
    return out


def test_one_growing_snapshot_bounded_files_and_links(tmp_path):
    n = 48
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    phones = partner_db(tmp_path / "partner.db", n)
    partner = Served(partner_server.create_app(tmp_path / "partner.db", PARTNER_KEY))
    clock = [T0]
    hub = Served(create_app(db, clock=lambda: clock[0]))
    exports = tmp_path / "exports"
    # Three rows a part: the split is exercised with a few dozen members.
    ex = adsegment.ExportSettings(directory=exports, max_file_bytes=len(adsegment.HEADER) + 3 * 34)
    try:
        sc = scenarios.Scenario(name="pass", target="passersby", control_share=0.0, quiet_hours=None)
        scenarios.add(conn, sc, now=T0 - 3600)
        client = client_for(partner.url)
        first_link, seen_snapshots, members, downloaded = None, [], set(), 0
        for run in range(8):  # eight runs, 30 minutes apart, six new passers-by before each
            now = T0 + run * 1800
            with conn:
                for i in range(run * 6, run * 6 + 6):
                    add_passerby(conn, i, now - 300)
                    if i in phones:
                        members.add(phones[i])
            clock[0] = now
            [res] = runner.run_due(conn, client, now=now, export=ex)
            assert res.status == "ok", res.error
            snap = res.snapshot
            # One accumulated segment: every member so far, not this run's delta.
            assert snap["rows"] == len(members) and res.counts["exported_rows"] == len(members)
            kinds = [subscriber_kind(i) for i in range(run * 6, run * 6 + 6)]
            assert res.counts["segment_no_phone"] == kinds.count("no_phone")
            assert res.counts["unknown"] == kinds.count("unknown")
            assert snap["parts"] == -(-len(members) // 3)
            seen_snapshots.append(snap["snapshot_id"])
            if run == 0:
                [link] = res.links
                first_link = link["token"]
                assert link["expires"] == now + 3 * DAY
            else:
                assert res.links == []  # the live link serves the new snapshot too
            # What the link serves is the whole current segment, in the seed's format.
            got, parts = [], None
            for part in range(1, snap["parts"] + 1):
                r = requests.get(f"{hub.url}/api/o2o/segments/{first_link}", params={"part": part}, timeout=5)
                assert r.status_code == 200, r.text
                downloaded += 1
                assert r.headers["X-Footfall-Snapshot"] == str(snap["snapshot_id"])
                parts = int(r.headers["X-Footfall-Parts"])
                assert len(r.content) <= ex.max_file_bytes
                assert hashlib.sha256(r.content).hexdigest() == r.headers["X-Footfall-Sha256"]
                lines = r.text.split("\r\n")
                assert lines[0] == "msisdn"
                got += lines[1:-1]
            assert parts == snap["parts"] and sorted(got) == got and set(got) == members and len(got) == len(members)
            assert all(HEX32.match(x) for x in got)  # never an empty msisdn, always lowercase MD5
            # Bounded on disk: the current snapshot and those superseded within the hour.
            on_disk = csv_files(exports)
            assert len(on_disk) <= 3 * snap["parts"]
            assert not list(exports.rglob("*.tmp"))
            rows_on_disk = set(read_rows(on_disk))
            assert rows_on_disk <= members and "" not in rows_on_disk
        assert len(set(seen_snapshots)) == 8
        assert conn.execute("SELECT count(*) FROM o2o_exports").fetchone()[0] == 0  # no per-run deltas

        # The register: one entry per snapshot, matching the files byte for byte.
        snaps = {s["id"]: s for s in register.snapshots(conn, 0, 2e9)}
        entries = [e for e in register.entries(conn, 0, 2e9) if e["kind"] == "segment"]
        assert len(entries) == 8
        for e in entries:
            d = json.loads(e["detail"])
            s = snaps[d["snapshot"]]
            assert (e["count"], d["rows"], d["bytes"], d["sha256"]) == (s["rows"], s["rows"], s["bytes"], s["sha256"])
            assert d["link_expires"] == T0 + 3 * DAY
        current = snaps[seen_snapshots[-1]]
        files = json.loads(conn.execute("SELECT files FROM o2o_snapshots WHERE id = ?", (current["id"],)).fetchone()[0])
        data = b"".join(Path(f["path"]).read_bytes() for f in files)
        assert hashlib.sha256(data).hexdigest() == current["sha256"] and len(data) == current["bytes"]
        downloads = [e for e in register.entries(conn, 0, 2e9) if e["kind"] == "segment_download"]
        assert len(downloads) == downloaded and all(json.loads(e["detail"])["snapshot"] in snaps for e in downloads)

        # A download pinned to a superseded snapshot works within the hour, not after.
        old = seen_snapshots[-2]
        pinned = f"{hub.url}/api/o2o/segments/{first_link}"
        assert requests.get(pinned, params={"snapshot": old}, timeout=5).status_code == 200
        last = T0 + 7 * 1800
        clock[0] = last + 3601
        [res] = runner.run_due(conn, client, now=last + 3601, export=ex)
        assert res.snapshot["unchanged"] and res.snapshot["snapshot_id"] == seen_snapshots[-1]
        assert requests.get(pinned, params={"snapshot": old}, timeout=5).status_code == 410
        assert len(csv_files(exports)) == res.snapshot["parts"]  # only the current one left

        # Rotation: a second link when the first is half way; never more than two live.
        tokens = [first_link]
        for k in range(1, 13):  # every 6 hours for 3 days
            now = last + k * 6 * 3600
            clock[0] = now
            [res] = runner.run_due(conn, client, now=now, export=ex)
            tokens += [lk["token"] for lk in res.links]
            live = conn.execute(
                "SELECT count(*) FROM o2o_share_links WHERE scenario_id = ? AND expires > ?", (sc.id, now)
            ).fetchone()[0]
            assert 1 <= live <= 2
        assert len(tokens) == 3
        # The first link has expired: refused. The newest serves the same segment.
        assert requests.get(f"{hub.url}/api/o2o/segments/{first_link}", timeout=5).status_code == 410
        assert requests.get(f"{hub.url}/api/o2o/segments/{tokens[-1]}", timeout=5).status_code == 200
        assert requests.get(f"{hub.url}/api/o2o/segments/not-a-token", timeout=5).status_code == 404

        # Past the membership window (cap_days = 7) with no new visits: the segment empties, and
        # the live link serves an empty file rather than hashes that left the window.
        now = last + 72 * 3600
        while now < T0 + 7.5 * DAY:
            now += 12 * 3600
            clock[0] = now
            [res] = runner.run_due(conn, client, now=now, export=ex)
            tokens += [lk["token"] for lk in res.links]
        assert res.snapshot["rows"] == 0
        assert conn.execute("SELECT count(*) FROM o2o_segment_rows").fetchone()[0] == 0
        r = requests.get(f"{hub.url}/api/o2o/segments/{tokens[-1]}", timeout=5)
        assert r.status_code == 200 and r.text == "msisdn\r\n"
        # Stopping the scenario stops the link and removes its files.
        scenarios.set_enabled(conn, "pass", False)
        assert requests.get(f"{hub.url}/api/o2o/segments/{tokens[-1]}", timeout=5).status_code == 410
        adsegment.cleanup(conn, ex, now=now)
        assert csv_files(exports) == []
    finally:
        hub.stop()
        partner.stop()
        conn.close()


def test_settings_and_global_link_cap(tmp_path):
    with pytest.raises(ValueError, match="max_file_bytes"):
        adsegment.ExportSettings(max_file_bytes=50)
    with pytest.raises(ValueError, match="live_links"):
        adsegment.ExportSettings(live_links=0)
    conn = store.connect(tmp_path / "hub.db")
    from footfall.hub.o2o import privacy

    privacy.attach(conn)
    ex = adsegment.ExportSettings(directory=tmp_path / "x", link_cap=2)
    made = []
    for k in range(3):
        sc = scenarios.Scenario(name=f"s{k}", quiet_hours=None)
        scenarios.add(conn, sc, now=T0)
        with conn:
            tid = conn.execute(
                "INSERT INTO o2o_targets (scenario_id, run_id, partner_hash, device_key, visit_at, assigned_at, status,"
                " known, messageable, phone_md5, matched_at, updated)"
                " VALUES (?, 1, ?, ?, ?, ?, 'segment', 1, 0, ?, ?, ?)",
                (sc.id, md5(f"m{k}"), f"d{k}", T0, T0, md5(f"p{k}"), T0, T0),
            ).lastrowid
            conn.execute(
                "INSERT INTO o2o_segment_rows (scenario_id, target_id, mac_md5, msisdn_md5, added)"
                " VALUES (?, ?, ?, ?, ?)",
                (sc.id, tid, md5(f"m{k}"), md5(f"p{k}"), T0),
            )
        res = adsegment.refresh(conn, sc, None, ex, now=T0 + k)
        made.append(len(res.links))
        if k == 2:
            assert res.warning == "link cap reached: no new share link" and res.link_expires is None
    assert made == [1, 1, 0]
    # Not registered as offered: no link reaches it.
    assert [e["scenario_id"] for e in register.entries(conn, 0, 2e9)] == [1, 2]
    conn.close()
