"""Centre -> hub: segment definitions and scenario settings, versioned, applied at the hub, and
the applied version reported back (issue 14 item 2). A real central service (SQLite and
PostgreSQL) over HTTP, a real hub database, the real pushback and sync paths."""

from __future__ import annotations

from pathlib import Path

import requests

from footfall.cloud_sync import changes, pushback, pushback_items
from footfall.cloud_sync.central import auth as central_auth
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread
from footfall.cloud_sync.sender import Sender
from footfall.hub import segment_rules, segments
from footfall.hub.o2o import coupons, scenarios
from tests import test_central_sync as shared
from tests.test_sync import NOW, SITE, TZ, config, make_hub

database = shared.database
pg_url = shared.pg_url


def _sync(conn, cfg, secret, now: float) -> None:
    changes.enqueue_changes(conn, SITE, tz=TZ, now=now, visit_events=False)
    assert Sender(conn, cfg, secret, sleep=lambda s: None).drain(max_attempts=5).ok


def test_definitions_reach_the_hub_and_the_applied_version_comes_back(tmp_path: Path, database: Database, broker):
    server = ServerThread(create_app(CentralConfig(), db=database))
    server.start()
    try:
        with database.connect() as c:
            secret = central_auth.add_hub(c, SITE).encode()
            team = {"X-API-Key": central_auth.create_api_key(c, "team", role="marketing")}
            other = {"X-API-Key": central_auth.create_api_key(c, "other", role="marketing", stores=["elsewhere"])}
        conn = make_hub(tmp_path / "hub.db")
        cfg = config(tmp_path / "hub.db", server.url, mqtt_host=broker.host, mqtt_port=broker.port)

        def publish(kind: str, ident: str, body: dict, headers=team, **kw) -> requests.Response:
            return requests.post(f"{server.url}/api/v1/pushback", json={"kind": kind, "id": ident, "body": body, **kw},
                                 headers=headers, timeout=10)  # fmt: skip

        # A segment of regulars (the hub's rule syntax) and a scenario aimed at it.
        rule = {"field": "visit_days", "op": ">=", "value": 2}
        r = publish("segment_definition", "regulars", {"rule": rule, "lookback_days": 3650})
        assert r.status_code == 201 and r.json()["version"] == 1
        r = publish("scenario_settings", "win-back", {"target": "segment:regulars", "control_share": 0.2,
                                                      "quiet_hours": [22, 9], "enabled": False})  # fmt: skip
        assert r.status_code == 201 and r.json()["version"] == 1
        # A store-bound user cannot address the whole chain.
        assert publish("segment_definition", "x", {"rule": rule}, headers=other).status_code == 403

        res = pushback.pull(conn, cfg, secret, now=NOW)
        assert (res.applied.segment_definitions, res.applied.scenario_settings) == (1, 1)
        expected = set(segment_rules.evaluate_rule(conn, rule, NOW, 3650))
        assert expected and set(segments.segment_members(conn, "regulars")) == expected
        sc = scenarios.get(conn, "win-back")
        assert (sc.target, sc.control_share, sc.quiet_hours, sc.enabled) == (
            "segment:regulars",
            0.2,
            (22.0, 9.0),
            False,
        )
        salt = sc.control_salt

        # Version 2 of each: the rule narrows, the scenario is switched on; the salt stays the
        # store's, so nobody moves between the control and the target group.
        rule2 = {"all": [rule, {"field": "visit_count", "op": ">=", "value": 3}]}
        assert publish("segment_definition", "regulars", {"rule": rule2, "lookback_days": 3650}).json()["version"] == 2
        assert publish("scenario_settings", "win-back", {"enabled": True}).json()["version"] == 2
        # A bad one (unknown rule field) is refused at the centre already (and at a hub, with
        # its reason, when one gets through: test_bad_scenario_settings_never_stop_a_hub).
        bad = publish("segment_definition", "broken", {"rule": {"field": "shoe_size", "op": "=", "value": 1}})
        assert bad.status_code == 400 and "shoe_size" in bad.text
        # A store manager's own segment is never overwritten by the centre.
        segments.create_segment(conn, "local-only", {"field": "visit_count", "op": ">=", "value": 1}, now=NOW)
        assert publish("segment_definition", "local-only", {"rule": rule}).ok

        res = pushback.pull(conn, cfg, secret, now=NOW + 60)
        assert res.applied.definitions_refused == 1
        assert set(segments.segment_members(conn, "regulars")) == set(
            segment_rules.evaluate_rule(conn, rule2, NOW, 3650)
        )
        sc = scenarios.get(conn, "win-back")
        assert sc.enabled and sc.control_salt == salt and sc.control_share == 0.2
        assert set(segments.segment_members(conn, "local-only")) == set(
            segment_rules.evaluate_rule(conn, {"field": "visit_count", "op": ">=", "value": 1}, NOW)
        )
        # Re-reading an old page changes nothing (a stale version is ignored).
        stale = {"kind": "segment_definition", "id": "regulars", "version": 1, "definition": {"rule": rule}}
        with conn:
            assert pushback_items.apply_items(conn, [stale], SITE, now=NOW + 90).segment_definitions == 1
        assert set(segments.segment_members(conn, "regulars")) == set(
            segment_rules.evaluate_rule(conn, rule2, NOW, 3650)
        )

        # The hub reports what it runs; the centre shows it per id and store.
        _sync(conn, cfg, secret, NOW + 120)
        got = requests.get(f"{server.url}/api/v1/definitions", headers=team, timeout=10).json()["definitions"]
        by_id = {(d["kind"], d["id"]): d for d in got}
        regulars = by_id[("segment_definition", "regulars")]
        assert regulars["version"] == 2 and regulars["stores_current"] == 1
        assert [(s["store"], s["version"], s["status"]) for s in regulars["stores"]] == [(SITE, 2, "applied")]
        assert by_id[("scenario_settings", "win-back")]["stores_current"] == 1
        assert ("segment_definition", "broken") not in by_id
        local = by_id[("segment_definition", "local-only")]["stores"][0]
        assert local["status"] == "refused" and "exists already" in local["error"]
        # A store-bound user sees only its stores' outcomes.
        seen = requests.get(f"{server.url}/api/v1/definitions", headers=other, timeout=10).json()["definitions"]
        assert all(d["stores"] == [] for d in seen)
        conn.close()
    finally:
        server.stop()


BAD_SETTINGS = (
    {"attribution_days": "7"},
    {"quiet_hours": [21]},
    {"target": 5},
    {"coupon": "x"},
    {"coupon": {"value": "300"}},
    {"timezone": "Mars/Olympus_Mons"},
    {"price_match": float("nan")},
    {"control_salt": "mine"},
    {"shoe_size": 42},
)


def test_bad_scenario_settings_never_stop_a_hub(tmp_path: Path) -> None:
    """Sent straight to the hub (an older centre, or a hand-made pushback): each is refused
    with its reason, the items behind it still apply, and the next sync queues as usual."""
    conn = make_hub(tmp_path / "hub.db")
    scenarios.add(conn, scenarios.Scenario(name="win-back", coupon=coupons.Generator(kind="fixed", value=300)), now=NOW)
    items = [
        {"kind": "scenario_settings", "id": "win-back", "version": i + 1, "settings": body}
        for i, body in enumerate(BAD_SETTINGS)
    ]
    # A partial coupon keeps the rest of the store's coupon.
    items.append({"kind": "scenario_settings", "id": "win-back", "version": 99,
                  "settings": {"coupon": {"min_purchase": 2000}}})  # fmt: skip
    with conn:
        res = pushback_items.apply_items(conn, items, SITE, now=NOW)
    assert res.definitions_refused == len(BAD_SETTINGS) and res.scenario_settings == 1
    sc = scenarios.get(conn, "win-back")
    assert (sc.coupon.kind, sc.coupon.value, sc.coupon.min_purchase) == ("fixed", 300.0, 2000.0)
    assert sc.attribution_days == 7.0 and sc.timezone == "UTC"
    assert changes.enqueue_changes(conn, SITE, tz=TZ, now=NOW, visit_events=False).total > 0


def test_the_centre_refuses_what_no_hub_could_apply(tmp_path: Path, database: Database) -> None:
    server = ServerThread(create_app(CentralConfig(), db=database))
    server.start()
    try:
        with database.connect() as c:
            team = {"X-API-Key": central_auth.create_api_key(c, "team", role="marketing")}
        url = f"{server.url}/api/v1/pushback"
        for body in BAD_SETTINGS:
            if body.get("price_match") != body.get("price_match"):
                continue  # NaN cannot travel as JSON
            r = requests.post(
                url, json={"kind": "scenario_settings", "id": "w", "body": body}, headers=team, timeout=10
            )
            assert r.status_code == 400, (body, r.text)
        bad_rule = {
            "kind": "segment_definition",
            "id": "s",
            "body": {"rule": {"field": "shoe_size", "op": "=", "value": 1}},
        }
        r = requests.post(url, json=bad_rule, headers=team, timeout=10)
        assert r.status_code == 400 and "shoe_size" in r.text
        with database.connect() as c:
            assert c.scalar("SELECT count(*) FROM definitions") == 0
    finally:
        server.stop()


def test_garbage_definition_reports_are_refused_by_the_centre(database: Database) -> None:
    from footfall.cloud_sync.central import validation

    for data in ({"segment_definition": "x"}, {"segment_definition": [{"id": "a", "status": "maybe"}]},
                 {"scenario_settings": [{"id": "a", "status": "applied", "version": "2"}]}):  # fmt: skip
        plan = validation.plan_records(SITE, [{"kind": "definitions", "key": SITE, "data": data}], now=NOW)
        assert plan.result.rejected == 1 and not plan.ops, data
