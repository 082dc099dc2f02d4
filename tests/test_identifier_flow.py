"""The phone hash's way from the telecom partner to the ad platform, for real (seeds 000, 004).

A simulated store day goes through real agents into a hub; the O2O runner matches the
day's MAC MD5s with the reference partner over HTTP, which shares a phone MD5 where the
subscriber allows it; the hub syncs to a real central service (SQLite and PostgreSQL); the
centre's data-supplier ("msisdn") export over HTTP then holds exactly one row per matched,
consented phone. Consent changes made at the centre reach the hub through pushback: a
withdrawal deletes the phone hash on the hub and at the centre, a consent given centrally is
recorded on every key the hub linked to the device.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import requests

from footfall.cloud_sync import changes, pushback
from footfall.cloud_sync.central import apply as central_apply
from footfall.cloud_sync.central import auth as central_auth
from footfall.cloud_sync.central import segments
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread
from footfall.cloud_sync.sender import Sender
from footfall.hub import store
from footfall.hub.o2o import consent as o2o_consent
from footfall.hub.o2o import coupons, optout, runner, scenarios
from tests import test_central_sync as shared
from tests.test_o2o_e2e import client_for, day, make_hub, make_partner  # noqa: F401 (fixture)
from tests.test_sync import TZ, config

database = shared.database
pg_url = shared.pg_url
SITE = "demo"


def _export(url: str, key: str) -> tuple[list[str], requests.Response]:
    r = requests.get(f"{url}/api/v1/segments/all/export", params={"format": "msisdn"},
                     headers={"X-API-Key": key}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["msisdn"]
    return [row[0] for row in rows[1:]], r


def test_partner_phone_hashes_reach_the_supplier_export(day, tmp_path: Path, database: Database, broker) -> None:  # noqa: F811
    _out, truth, msgs = day
    db, end = make_hub(tmp_path, msgs)
    partner, _pdb = make_partner(tmp_path, truth)
    key_file = tmp_path / "chain.key"
    key_file.write_text("cd" * 32)
    server = ServerThread(create_app(CentralConfig(chain_key_file=str(key_file)), db=database))
    server.start()
    try:
        conn = store.connect(db)
        sc = scenarios.Scenario(
            name="passersby", target="passersby", control_share=0.0, quiet_hours=None, price_match=1.0,
            price_sms=2.5, coupon=coupons.Generator(kind="fixed", value=300), control_salt="ids",
        )  # fmt: skip
        scenarios.add(conn, sc, now=end - 3600)
        export = runner.ExportSettings(directory=tmp_path / "exports")
        (result,) = runner.run_due(conn, client_for(partner.url), now=end, export=export)
        assert result.status == "ok"
        shared_phones = {
            r[0]: r[1]
            for r in conn.execute("SELECT device_key, phone_md5 FROM o2o_targets WHERE phone_md5 IS NOT NULL")
        }
        matched = conn.execute("SELECT count(*) FROM o2o_targets WHERE known = 1").fetchone()[0]
        # The reference partner shares about half of the known subscribers' phone hashes.
        assert 10 <= len(shared_phones) < matched

        with database.connect() as c:
            secret = central_auth.add_hub(c, SITE).encode()
            team = central_auth.create_api_key(c, "marketing", role="marketing")
            admin = central_auth.create_api_key(c, "admin", role="admin")
        cfg = config(db, server.url, site=SITE, mqtt_host=broker.host, mqtt_port=broker.port, sensors=["s1", "s2"])
        changes.enqueue_changes(conn, SITE, tz=TZ, now=end)
        sent = Sender(conn, cfg, secret, sleep=lambda s: None).drain(max_attempts=5)
        assert sent.ok and sent.records > 0

        with database.connect() as c:
            segments.create_segment(c, "all", "", {"field": "visits", "op": ">=", "value": 1})
            segments.recount(c, "all")
            sources = {r[0] for r in c.all("SELECT source FROM consents")}
        assert sources == {"partner"}
        phones, resp = _export(server.url, team)
        # One row per phone: a phone whose MACs the hub could not link is still one person.
        assert sorted(phones) == sorted(set(shared_phones.values()))
        assert resp.headers["X-Footfall-Count"] == str(len(phones))
        assert "more than 5000" in resp.headers["X-Footfall-Warning"]

        # Consent withdrawn at the centre: gone there at once, and on the hub after pushback.
        gone_key, gone_phone = sorted(shared_phones.items())[0]
        r = requests.post(f"{server.url}/api/v1/consents/withdraw", json={"device": gone_key},
                          headers={"X-API-Key": admin}, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        assert gone_phone not in _export(server.url, team)[0]
        assert pushback.pull(conn, cfg, secret).applied.consents_withdrawn == 1
        assert conn.execute("SELECT phone_md5 FROM o2o_targets WHERE device_key = ?", (gone_key,)).fetchall()
        assert {r[0] for r in conn.execute("SELECT phone_md5 FROM o2o_targets WHERE device_key = ?", (gone_key,))} == {
            None
        }
        # The hub's next profile of that device carries no phone hash, and nothing brings it back.
        changes.enqueue_changes(conn, SITE, tz=TZ, now=end + 60)
        assert Sender(conn, cfg, secret, sleep=lambda s: None).drain(max_attempts=5).ok
        with database.connect() as c:
            segments.recount(c, "all")
        assert gone_phone not in _export(server.url, team)[0]

        # Consent given at the centre for a device the partner knew but did not share a phone
        # of: every hub records it, on every key linked to the device.
        quiet = conn.execute(
            "SELECT device_key FROM o2o_targets WHERE known = 1 AND phone_md5 IS NULL ORDER BY device_key LIMIT 1"
        ).fetchone()[0]
        r = requests.post(f"{server.url}/api/v1/consents", json={"device": quiet},
                          headers={"X-API-Key": admin}, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        assert pushback.pull(conn, cfg, secret).applied.consents_granted == 1
        row = conn.execute("SELECT granted, withdrawn, source FROM consents WHERE device = ?", (quiet,)).fetchone()
        assert row[0] is not None and row[1] is None and row[2] == "central"

        # Withdrawn at the store: a consent withdrawn for the SMS channel, and an opt-out
        # (`footfall o2o stop add`); the next sync takes both phone hashes out of the centre.
        (_, p_consent), (_, p_stop), (k_twice, p_twice) = sorted(shared_phones.items())[1:4]
        o2o_consent.set_consent(conn, p_consent, "sms", "withdrawn", now=end + 120)
        with conn:
            optout.forget(conn, [p_stop], reason="opt-out (local)", now=end + 120)
        changes.enqueue_changes(conn, SITE, tz=TZ, now=end + 180)
        assert Sender(conn, cfg, secret, sleep=lambda s: None).drain(max_attempts=5).ok
        with database.connect() as c:
            segments.recount(c, "all")
        left = _export(server.url, team)[0]
        assert p_consent not in left and p_stop not in left and p_twice in left

        # One phone under two device ids at the centre (stores that could not link its MACs):
        # withdrawing it on one id takes it off the other too.
        other = "ee" * 32
        rec = {"kind": "profile", "key": other, "data": {"device": other, "first_seen": end, "last_seen": end,
               "visits": 1, "phone_md5": p_twice, "consent_granted": end, "consent_source": "partner"}}  # fmt: skip
        with database.connect() as c, c.transaction():
            central_apply.apply_records(c, "store-b", [rec], now=end + 200)
            assert c.scalar("SELECT count(*) FROM identifiers WHERE value = ?", (p_twice,)) == 2
        r = requests.post(f"{server.url}/api/v1/consents/withdraw", json={"device": k_twice},
                          headers={"X-API-Key": admin}, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        with database.connect() as c:
            assert c.scalar("SELECT count(*) FROM identifiers WHERE value = ?", (p_twice,)) == 0
            assert c.scalar("SELECT pd_consent FROM consents WHERE device = ?", (other,)) == 0
        conn.close()
    finally:
        server.stop()
        partner.stop()
