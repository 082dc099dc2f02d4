"""Segments and clusters through the hub's web API: real SQLite, segments made by ``hub/segments.py``."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from footfall.hub import api_models, auth, segment_clusters, segments, store
from footfall.hub.api import WebSettings, create_app
from tests.test_segments import NOW, _population, add_visit

DAY = 86400.0
KEY_HEADER = "X-API-Key"
QUICK = {"all": [{"field": "dwell_s", "op": "<", "value": 300}, {"field": "visit_count_7d", "op": ">=", "value": 1}]}


@contextmanager
def _client(path: Path) -> Iterator[TestClient]:
    app = create_app(path, WebSettings(tz="UTC", refresh_interval_s=0, clock=lambda: NOW))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Clusters over a three-behaviour population, then two rule segments recounted three times.
    Read-only for the tests that share it (clustering is the slow part)."""
    path = tmp_path_factory.mktemp("segments") / "hub.db"
    conn = store.connect(path)
    _population(random.Random(3), conn)  # visits in 2026-11-02 .. 11-16
    # This week: five quick look-ins, two long stays, one passer-by.
    for i in range(5):
        add_visit(conn, f"q{i}", NOW - (i + 1) * 3600, 120 + i)
    for i in range(2):
        add_visit(conn, f"long{i}", NOW - 2 * DAY, 3600, zone="till")
    add_visit(conn, "pb", NOW - DAY, 30, cls="passerby")
    conn.commit()
    segment_clusters.run_clustering(conn, now=NOW - 3 * DAY, lookback_days=30)
    segments.create_segment(conn, "quick this week", QUICK, dynamic=True, now=NOW - 2 * 3600)
    segments.create_segment(
        conn,
        "till or long",
        {
            "any": [
                {"field": "zone", "op": "in", "value": ["till"]},
                {"field": "max_dwell_s", "op": ">=", "value": 3000},
            ]
        },
        dynamic=False,
        now=NOW - 2 * 3600,
    )
    segments.refresh_segments(conn, now=NOW - 3600)
    segments.refresh_segments(conn, now=NOW)
    key = auth.create_api_key(conn, "test")
    conn.close()
    return path, key


@pytest.fixture
def client(seeded: tuple[Path, str]) -> Iterator[TestClient]:
    with _client(seeded[0]) as c:
        yield c


@pytest.mark.parametrize("path", ["/api/segments", "/api/clusters", "/api/segments?format=csv", "/api/clusters/csv"])
def test_segment_routes_need_a_session_or_key(client: TestClient, path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 401
    assert client.get(path, headers={KEY_HEADER: "ffk_nope_nope"}, follow_redirects=False).status_code == 401


def test_segments_sizes_history_and_profiles(client: TestClient, seeded: tuple[Path, str]) -> None:
    r = client.get("/api/segments", headers={KEY_HEADER: seeded[1]})
    assert r.status_code == 200
    body = api_models.Segments.model_validate(r.json())  # the documented shape
    by_name = {s.name: s for s in body.segments}

    quick = by_name["quick this week"]
    assert quick.kind == "rule" and quick.mode == "dynamic" and quick.current
    # q3 and q4 arrived after the segment was created: the first count is 3, then 4, then 5.
    assert quick.size == 5
    assert [p.members for p in quick.history] == [3, 4, 5]
    assert [p.ts for p in quick.history] == [NOW - 7200, NOW - 3600, NOW]
    assert quick.rule == "dwell_s < 300 AND visit_count_7d >= 1"
    assert quick.definition == {"rule": QUICK, "lookback_days": 30.0}
    p = quick.profile
    assert p is not None and p.devices == 5
    assert p.median_dwell_min == pytest.approx(122 / 60, abs=0.05)
    assert p.visitor_share == 1.0 and p.passerby_share == 0.0 and p.visit_days == 1.0
    # Arrivals 15:00..19:00 UTC: the circular mean is 17:00.
    assert p.typical_time == "17:00"

    frozen = by_name["till or long"]
    assert frozen.mode == "static" and frozen.rule == "zone in [till] OR max_dwell_s >= 3000"
    assert frozen.size == 2 and [h.members for h in frozen.history] == [2, 2, 2]
    assert frozen.profile is not None and frozen.profile.median_dwell_min == 60.0

    clusters = [s for s in body.segments if s.kind == "cluster"]
    assert len(clusters) == 3 and all(s.current for s in clusters)
    assert sum(s.size for s in clusters) == 120
    assert all(s.profile is not None and s.profile.devices == s.size for s in clusters)
    assert "cluster: lunch-time regulars" in by_name

    # Only the latest N recounts.
    short = client.get("/api/segments", params={"history": 1}, headers={KEY_HEADER: seeded[1]}).json()
    assert {s["name"]: [h["members"] for h in s["history"]] for s in short["segments"]}["quick this week"] == [5]
    assert client.get("/api/segments", params={"history": 0}, headers={KEY_HEADER: seeded[1]}).status_code == 422


def test_clusters_k_silhouette_labels_and_profiles(client: TestClient, seeded: tuple[Path, str]) -> None:
    r = client.get("/api/clusters", headers={KEY_HEADER: seeded[1]})
    assert r.status_code == 200
    body = api_models.Clusters.model_validate(r.json())
    assert body.k == 3 and body.devices == 120 and body.as_of == NOW - 3 * DAY
    assert "silhouette" in (body.criterion or "")
    scores = {s.k: s.silhouette for s in body.silhouette_by_k}
    assert body.silhouette == scores[3] and body.silhouette >= max(scores.values()) - segment_clusters.SILHOUETTE_TOL
    labels = {c.label: c for c in body.clusters}
    lunch = labels["lunch-time regulars"]
    assert lunch.size == 40 and lunch.share == pytest.approx(1 / 3, abs=1e-3)
    assert lunch.profile is not None and 12.0 <= lunch.profile.typical_hour <= 13.0
    assert lunch.profile.typical_time.startswith("12:") and lunch.profile.visit_days == 6.0
    assert 15 <= lunch.profile.median_dwell_min <= 30
    quick = next(c for c in body.clusters if "quick look-ins" in c.label)
    assert quick.profile is not None and quick.profile.median_dwell_min < 5
    assert [h.members for h in lunch.history] == [40, 40, 40]  # the run, then two refreshes


def test_reclustering_marks_the_old_run_and_reports_the_new(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    conn = store.connect(path)
    _population(random.Random(3), conn)
    segment_clusters.run_clustering(conn, now=NOW - 3 * DAY)
    # Ten days later only the quick look-ins' window is left: a different set of clusters.
    for i in range(30):
        add_visit(conn, f"new{i}", NOW - (i % 5) * DAY - 3600, 40 if i % 2 else 5000, cls="visitor")
    conn.commit()
    result = segment_clusters.run_clustering(conn, now=NOW + 7 * DAY, lookback_days=14)
    key = auth.create_api_key(conn, "t")
    conn.close()
    with _client(path) as client:
        body = client.get("/api/clusters", headers={KEY_HEADER: key}).json()
        assert body["k"] == result.k and body["as_of"] == NOW + 7 * DAY
        assert sorted(c["label"] for c in body["clusters"]) == sorted(result.names)
        segs = client.get("/api/segments", headers={KEY_HEADER: key}).json()["segments"]
        retired = [s for s in segs if s["kind"] == "cluster" and not s["current"]]
        assert retired and all(s["size"] == 0 and s["profile"] is None for s in retired)


def test_csv_variants(client: TestClient, seeded: tuple[Path, str]) -> None:
    headers = {KEY_HEADER: seeded[1]}
    r = client.get("/api/segments", params={"format": "csv"}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="segments.csv"' in r.headers["content-disposition"]
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert rows["quick this week"]["size"] == "5" and rows["quick this week"]["mode"] == "dynamic"
    assert rows["quick this week"]["rule"] == "dwell_s < 300 AND visit_count_7d >= 1"
    assert rows["quick this week"]["typical_time"] == "17:00"
    assert rows["cluster: lunch-time regulars"]["kind"] == "cluster"
    r = client.get("/api/clusters/csv", headers=headers)  # redirects to ?format=csv
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and {row["k"] for row in rows} == {"3"}
    assert {"label", "size", "share", "median_dwell_min", "typical_time", "visit_days"} <= set(rows[0])
    assert client.get("/api/segments", params={"format": "xml"}, headers=headers).status_code == 400


def test_empty_store_says_nothing_yet(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    conn = store.connect(path)
    key = auth.create_api_key(conn, "t")
    conn.close()
    with _client(path) as client:
        assert client.get("/api/segments", headers={KEY_HEADER: key}).json() == {"segments": []}
        body = client.get("/api/clusters", headers={KEY_HEADER: key}).json()
        assert body["k"] == 0 and body["clusters"] == [] and body["as_of"] is None
        # No clustering yet: the header alone, never 0 bytes.
        empty = client.get("/api/clusters?format=csv", headers={KEY_HEADER: key}).text
        assert empty.splitlines() == [empty.strip()] and empty.startswith("k,silhouette,id,label,size,share")


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/segments" in paths and "/api/clusters" in paths


def test_rule_profile_follows_the_recount_and_samples_big_segments(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    conn = store.connect(path)
    for i in range(4):
        add_visit(conn, f"q{i}", NOW - (i + 1) * 3600, 60)
    conn.commit()
    seg_id = segments.create_segment(conn, "quick", QUICK, now=NOW - 600)
    key = auth.create_api_key(conn, "t")
    assert segment_clusters.member_profile(conn, seg_id, now=NOW, sample=2).size == 2
    with _client(path) as client:

        def quick() -> dict:
            segs = client.get("/api/segments", headers={KEY_HEADER: key}).json()["segments"]
            return next(s for s in segs if s["name"] == "quick")

        first = quick()
        assert first["size"] == 4 and first["profile"]["median_dwell_min"] == 1.0
        # New quick visits of 4 min: the next recount changes the members and so the profile.
        for i in range(6):
            add_visit(conn, f"r{i}", NOW - 300, 240)
        conn.commit()
        assert quick()["profile"] == first["profile"]  # unchanged until the recount
        segments.refresh_segments(conn, now=NOW)
        again = quick()
        assert again["size"] == 10 and again["profile"]["devices"] == 10
        assert again["profile"]["median_dwell_min"] == 4.0
    conn.close()
