"""O2O results at the centre (issue 14 item 4): two real hubs run scenarios against the
reference partner, redeem coupons, sync to a real central service (SQLite and PostgreSQL);
the centre's API, CSV and page give per store and scenario what each hub's own report says,
and the chain total adds them up. Every export the centre makes lands in its register."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import shutil
from pathlib import Path

import pytest
import requests

from footfall.cloud_sync import changes
from footfall.cloud_sync.central import auth as central_auth
from footfall.cloud_sync.central import segments
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread
from footfall.cloud_sync.sender import Sender
from footfall.hub import store
from footfall.hub.o2o import coupons, reports, runner, scenarios
from tests import test_central_sync as shared
from tests.test_o2o_e2e import client_for, day, make_hub, make_partner  # noqa: F401 (fixture)
from tests.test_sync import config

database = shared.database
pg_url = shared.pg_url
TZ = "UTC"
COMPARED = ("eligible", "control", "matched", "messaged", "segment", "coupons_redeemed", "revenue", "costs", "romi",
            "return_rate_treated", "return_rate_control", "uplift")  # fmt: skip


def test_o2o_results_per_store_and_chain(day, tmp_path: Path, database: Database, broker) -> None:  # noqa: F811
    _out, truth, msgs = day
    db, end = make_hub(tmp_path, msgs)
    partner, _pdb = make_partner(tmp_path, truth)
    server = ServerThread(create_app(CentralConfig(), db=database))
    server.start()
    try:
        conn = store.connect(db)
        sc = scenarios.Scenario(
            name="short-visits", target="short_visits", control_share=0.2, quiet_hours=None, price_match=1.0,
            price_sms=2.5, coupon=coupons.Generator(kind="percent", value=15), control_salt="central-o2o",
            fixed_cost=100.0,
        )  # fmt: skip
        scenarios.add(conn, sc, now=end - 3600)
        (res,) = runner.run_due(conn, client_for(partner.url), now=end, export=runner.ExportSettings(tmp_path / "x"))
        assert res.status == "ok" and res.counts["messaged"] >= 2
        codes = [r[0] for r in conn.execute("SELECT coupon_code FROM o2o_targets WHERE status = 'messaged'")]
        for i, code in enumerate(codes[:-1]):
            coupons.redeem(conn, code, "store-1", 1000.0 + 100 * i, now=end + 600)
        conn.close()
        sites = ("north", "south")
        shutil.copy(db, tmp_path / "south.db")  # the same day in a second store: the chain doubles
        paths = {"north": db, "south": tmp_path / "south.db"}
        local_day = dt.datetime.fromtimestamp(end - 3600, dt.UTC).date().isoformat()
        with database.connect() as c:
            team = {"X-API-Key": central_auth.create_api_key(c, "team", role="marketing")}
            north_only = {"X-API-Key": central_auth.create_api_key(c, "n", role="readonly", stores=["north"])}
            secrets = {s: central_auth.add_hub(c, s).encode() for s in sites}
        own = {}
        for site in sites:
            hub = store.connect(paths[site])
            changes.enqueue_changes(hub, site, tz=TZ, now=end + 3600, visit_events=False)
            cfg = config(paths[site], server.url, site=site, mqtt_host=broker.host, mqtt_port=broker.port)
            assert Sender(hub, cfg, secrets[site], sleep=lambda s: None).drain(max_attempts=5).ok
            start = dt.datetime.fromisoformat(local_day).replace(tzinfo=dt.UTC).timestamp()
            own[site] = reports.report(hub, start, start + 86400, tz=TZ)[0]
            own[site]["billed"] = reports.partner_invoice(hub, start, start + 86400)["total"]
            # Nothing changed: the next run queues no scenario result again.
            assert changes.enqueue_changes(hub, site, tz=TZ, now=end + 3700, visit_events=False).scenario_results == 0
            hub.close()

        url = f"{server.url}/api/v1/o2o/results"
        got = requests.get(url, params={"start": local_day, "end": local_day}, headers=team, timeout=10).json()
        rows = {r["store"]: r for r in got["rows"]}
        assert set(rows) == set(sites)
        for site in sites:
            for k in COMPARED:
                assert rows[site][k] == pytest.approx(own[site][k]), (site, k)
            # The partner's bill: matches and SMS by when they happened, as it counts them.
            assert rows[site]["invoice"] == pytest.approx(own[site]["billed"])
        (total,) = got["totals"]
        assert total["eligible"] == 2 * own["north"]["eligible"]
        assert total["revenue"] == pytest.approx(2 * own["north"]["revenue"])
        assert total["costs"] == pytest.approx(2 * own["north"]["costs"])  # fixed cost once per store
        assert total["romi"] == pytest.approx(own["north"]["romi"], abs=1e-3)
        assert total["uplift"] == pytest.approx(own["north"]["uplift"], abs=1e-4)
        # CSV: the same rows plus the total; a store-bound user sees only its store.
        text = requests.get(url, params={"start": local_day, "end": local_day, "format": "csv"}, headers=team).text
        assert [r["store"] for r in csv.DictReader(io.StringIO(text))] == ["north", "south", "*"]
        mine = requests.get(url, params={"start": local_day, "end": local_day}, headers=north_only).json()
        assert [r["store"] for r in mine["rows"]] == ["north"] and mine["totals"][0]["eligible"] == own["north"][
            "eligible"
        ]
        # An empty period is a header, not nothing; a bad day is a clear 400.
        empty = requests.get(url, params={"start": "2001-01-01", "end": "2001-01-02", "format": "csv"}, headers=team)
        assert empty.text.startswith("store,scenario,")
        bad = requests.get(url, params={"start": "yesterday", "end": local_day}, headers=team)
        assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
        assert requests.get(url, params={"start": local_day, "end": "2001-01-01"}, headers=team).status_code == 400
        assert "O2O results" in requests.get(f"{server.url}/o2o", timeout=10).text

        # The register: each export made here, with what was handed over.
        with database.connect() as c:
            segments.create_segment(c, "all", "", {"field": "visits", "op": ">=", "value": 1})
            segments.recount(c, "all")
        got_csv = requests.get(f"{server.url}/api/v1/segments/all/export", params={"format": "csv"}, headers=team)
        got_ms = requests.get(f"{server.url}/api/v1/segments/all/export", params={"format": "msisdn"}, headers=team)
        assert got_csv.ok and got_ms.ok
        reg = requests.get(f"{server.url}/api/v1/exports", headers=team, timeout=10).json()["exports"]
        assert [(e["format"], e["who"], e["segment"]) for e in reg] == [
            ("msisdn", "team", "all"),
            ("csv", "team", "all"),
        ]
        assert reg[0]["sha256"] == hashlib.sha256(got_ms.content).hexdigest() and reg[0]["warning"]
        assert reg[1]["rows"] == len(got_csv.text.splitlines()) - 1 and reg[1]["bytes"] == len(got_csv.content)
        assert requests.get(f"{server.url}/api/v1/exports", params={"format": "csv"}, headers=team).text.startswith(
            "id,ts,who,segment,"
        )
    finally:
        server.stop()
        partner.stop()


def test_one_hubs_garbage_day_does_not_break_the_results(database: Database) -> None:
    import json

    from footfall.cloud_sync.central import o2o

    good = {"eligible": 10, "control": 2, "matched": 8, "sent_to_partner": 10, "revenue": 1000.0, "partner_cost": 8.0,
            "invoice": 8.0, "discount_cost": 100.0, "return_value": 1000.0}  # fmt: skip
    text = json.dumps(good)
    bad = text.replace('"revenue": 1000.0', '"revenue": NaN').replace('"eligible": 10', '"eligible": 1e400')
    with database.connect() as c:
        for store, data in (("north", text), ("south", bad)):
            c.execute(
                "INSERT INTO scenario_results (store, scenario, period, data, updated) VALUES (?, 'x', ?, ?, 0)",
                (store, "day:2026-11-02", data),
            )
        res = o2o.results(c, "2026-11-01", "2026-11-03", None)
    json.dumps(res, allow_nan=False)  # what JSONResponse does
    rows = {r["store"]: r for r in res["rows"]}
    assert rows["north"]["revenue"] == 1000 and rows["south"]["revenue"] == 0 and rows["south"]["eligible"] == 0
