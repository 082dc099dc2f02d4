"""Rule-based segments compile to parameterised SQL on a real hub database; clustering picks k."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from footfall.hub import segment_clusters, segment_rules, segments, store
from footfall.hub.segment_rules import RuleError, compile_rule, evaluate_rule, parse_rule

NOW = dt.datetime(2026, 11, 20, 20, 0, tzinfo=dt.UTC).timestamp()  # a Friday evening


def add_visit(
    conn: sqlite3.Connection,
    key: str,
    start: float,
    dwell: float,
    cls: str = "visitor",
    zone: str = "s1",
    excluded: int = 0,
    partner: str | None = None,
) -> None:
    t = dt.datetime.fromtimestamp(start, dt.UTC)
    conn.execute(
        """INSERT INTO visits (site, device, device_key, randomized, partner_hash, first_seen, last_seen, dwell_s,
               inside_s, class, long_stay, excluded, best_sensor, best_rssi, sensors, n_sensor_visits, day, hour)
           VALUES ('shop', ?, ?, 1, ?, ?, ?, ?, ?, ?, 0, ?, ?, -60, ?, 1, ?, ?)""",
        (
            key,
            key,
            partner,
            start,
            start + dwell,
            dwell,
            dwell,
            cls,
            excluded,
            zone,
            zone,
            t.date().isoformat(),
            t.hour,
        ),
    )


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = store.connect(tmp_path / "hub.db")
    day = 86400.0
    # a: two short visits this week -> quick; b: passer-by three times this week; c: long stay;
    # d: old visit only (outside 7 days); e: excluded staff.
    add_visit(conn, "a", NOW - 1 * day, 120)
    add_visit(conn, "a", NOW - 2 * day, 200, zone="till")
    add_visit(conn, "b", NOW - 1 * day, 30, cls="passerby")
    add_visit(conn, "b", NOW - 3 * day, 40, cls="passerby")
    add_visit(conn, "b", NOW - 5 * day, 20, cls="passerby")
    add_visit(conn, "c", NOW - 0.5 * day, 3600, zone="till", partner="p1")
    add_visit(conn, "d", NOW - 20 * day, 600)
    add_visit(conn, "e", NOW - 1 * day, 100, excluded=1)
    conn.commit()
    return conn


def test_example_rule_from_the_issue(db: sqlite3.Connection) -> None:
    rule = {
        "all": [
            {"field": "dwell_s", "op": "<", "value": 300},
            {"field": "passerby_count_7d", "op": ">=", "value": 2},
        ]
    }
    assert evaluate_rule(db, rule, NOW) == ["b"]


def test_or_groups_nesting_sets_and_bools(db: sqlite3.Connection) -> None:
    rule = {
        "any": [
            {"field": "zone", "op": "in", "value": ["till"]},
            {
                "all": [
                    {"field": "recency_days", "op": ">", "value": 10},
                    {"field": "visit_days", "op": "=", "value": 1},
                ]
            },
        ]
    }
    assert evaluate_rule(db, rule, NOW) == ["a", "c", "d"]
    assert evaluate_rule(db, {"field": "zone", "op": "not in", "value": ["till"]}, NOW) == ["b", "d"]
    assert evaluate_rule(db, {"field": "has_partner", "op": "=", "value": True}, NOW) == ["c"]
    assert evaluate_rule(db, {"field": "visit_count_7d", "op": ">=", "value": 2}, NOW) == ["a"]
    # Lookback: d's visit is 20 days old.
    assert evaluate_rule(db, {"field": "dwell_s", "op": ">=", "value": 0}, NOW, lookback_days=7) == ["a", "b", "c"]


def test_values_are_parameters_never_sql_text() -> None:
    evil = "x') OR 1=1; DROP TABLE visits; --"
    sql, params = compile_rule(parse_rule({"field": "zone", "op": "=", "value": evil}), NOW)
    assert evil not in sql
    assert evil in params


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"field": "shoe_size", "op": "<", "value": 3}, "unknown field 'shoe_size'"),
        ({"field": "dwell_s", "op": "~", "value": 3}, "unknown op '~'"),
        ({"field": "dwell_s", "op": "<", "value": "300"}, "finite number"),
        ({"field": "dwell_s", "op": "<", "value": True}, "finite number"),
        ({"field": "zone", "op": "in", "value": "till"}, "non-empty list"),
        ({"field": "randomized", "op": "<", "value": True}, "true/false"),
        ({"all": []}, "non-empty list"),
        ({"all": [{"field": "dwell_s", "op": "<"}]}, "rule.all[0]"),
        ({"all": [], "any": []}, "exactly one key"),
        ([1, 2], "expected an object"),
        ("{not json", "not JSON"),
    ],
)
def test_clear_errors(rule: object, message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_rule(rule)


def test_too_deep_is_refused() -> None:
    rule: dict = {"field": "dwell_s", "op": "<", "value": 1}
    for _ in range(segment_rules.MAX_DEPTH + 2):
        rule = {"all": [rule]}
    with pytest.raises(RuleError, match="nested deeper"):
        parse_rule(rule)


def test_static_and_dynamic_segments_with_counts_over_time(db: sqlite3.Connection) -> None:
    rule = {"field": "visit_count_7d", "op": ">=", "value": 1}
    segments.create_segment(db, "this week", rule, dynamic=True, now=NOW)
    segments.create_segment(db, "this week (frozen)", rule, dynamic=False, now=NOW)
    assert segments.segment_members(db, "this week") == ["a", "c"]
    add_visit(db, "f", NOW + 3600, 500)
    db.commit()
    sizes = segments.refresh_segments(db, now=NOW + 7200)
    assert sizes == {"this week": 3, "this week (frozen)": 2}
    assert segments.segment_history(db, "this week") == [(NOW, 2), (NOW + 7200, 3)]
    assert segments.segment_history(db, "this week (frozen)") == [(NOW, 2), (NOW + 7200, 2)]
    # Membership of another segment is a field too.
    assert evaluate_rule(db, {"field": "segment", "op": "=", "value": "this week (frozen)"}, NOW + 7200) == ["a", "c"]
    with pytest.raises(RuleError, match="exists already"):
        segments.create_segment(db, "this week", rule, now=NOW)
    listed = {s["name"]: s for s in segments.list_segments(db)}
    assert listed["this week"]["members"] == 3 and listed["this week"]["dynamic"] is True


def _population(rng: random.Random, conn: sqlite3.Connection) -> dict[str, str]:
    """Three behaviours: weekday lunch regulars, weekend browsers, quick one-off look-ins."""
    truth = {}
    base = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # a Monday
    for i in range(40):
        key = f"lunch{i}"
        truth[key] = "lunch"
        for d in rng.sample([0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 14, 15], 6):
            t = base + dt.timedelta(days=d, hours=12, minutes=rng.uniform(0, 60))
            add_visit(conn, key, t.timestamp(), rng.uniform(900, 1800))
    for i in range(40):
        key = f"weekend{i}"
        truth[key] = "weekend"
        for d in rng.sample([5, 6, 12, 13], 2):
            t = base + dt.timedelta(days=d, hours=rng.uniform(15, 17))
            add_visit(conn, key, t.timestamp(), rng.uniform(1200, 2400), zone="s2")
    for i in range(40):
        key = f"quick{i}"
        truth[key] = "quick"
        t = base + dt.timedelta(days=rng.randrange(0, 5), hours=rng.uniform(9, 18))
        add_visit(conn, key, t.timestamp(), rng.uniform(60, 200))
    conn.commit()
    return truth


def test_clustering_picks_k_by_silhouette_and_labels_readably(tmp_path: Path) -> None:
    from sklearn.metrics import adjusted_rand_score

    conn = store.connect(tmp_path / "hub.db")
    truth = _population(random.Random(3), conn)
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp()
    result = segment_clusters.run_clustering(conn, now=now)
    assert result.k == 3, result.silhouette
    assert result.silhouette[3] >= max(result.silhouette.values()) - segment_clusters.SILHOUETTE_TOL
    assert adjusted_rand_score([truth[k] for k in result.keys], result.labels) > 0.9
    names = set(result.names)
    assert "lunch-time regulars" in names
    assert any(n.startswith("weekend") for n in names)
    assert any("quick look-ins under 5 min" in n for n in names)
    listed = {s["name"]: s for s in segments.list_segments(conn) if s["kind"] == "cluster"}
    assert sum(s["members"] for s in listed.values()) == 120
    assert all(s["profile"]["size"] == s["members"] for s in listed.values())
    # A second run replaces the clusters, keeping names stable for the same behaviour.
    again = segment_clusters.run_clustering(conn, now=now)
    assert set(again.names) == names


def test_clustering_small_inputs() -> None:
    empty = segment_clusters.cluster_devices([], np.zeros((0, 7)))
    assert empty.k == 0
    raw = np.array([[3.0, 12.0, 0.0, 1.0, 2.0, 1.0, 0.0]] * 4)
    one = segment_clusters.cluster_devices(["a", "b", "c", "d"], raw)
    assert one.k == 1 and one.labels == [0, 0, 0, 0]
