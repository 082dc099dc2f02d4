"""The hub's web API through the real ASGI app: auth, numbers, CSV, OpenAPI, bad input."""

from __future__ import annotations

import argparse
import io
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from footfall.hub import api_models, auth, login_limits, store
from footfall.hub.api import STATIC, WebSettings, create_app
from footfall.hub.serve import register_web
from tests.test_hub_metrics import D, ts, visit

PASSWORD = "correct horse battery"
NOW = ts(D, 15, 30)
API_PATHS = [
    "/api/now",
    "/api/footfall",
    "/api/engagement",
    "/api/loyalty",
    "/api/compare",
    "/api/sensors",
    "/api/rejects",
    "/api/ping",
    "/api/footfall/csv",
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "hub.db"
    conn = store.connect(path)
    for i in range(6):
        visit(conn, f"v{i}", D, 10 + i % 3, dwell_s=300 * (i + 1))
    for i in range(14):
        visit(conn, f"p{i}", D, 11, cls="passerby", dwell_s=30, zone="entrance")
    visit(conn, "v0", D - timedelta(days=7), 10)
    conn.execute("INSERT INTO presence VALUES ('s1', 'floor', ?, 20, 5)", (NOW - 20,))
    conn.execute("INSERT INTO sensors (site, sensor, state, last_message) VALUES ('s1', 'floor', 'online', ?)", (NOW,))
    conn.execute("INSERT INTO ingest_rejects VALUES ('schema', 2, ?, 'missing field')", (NOW,))
    auth.add_user(conn, "manager", PASSWORD)
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def app_client(db: Path) -> Iterator[TestClient]:
    app = create_app(db, WebSettings(tz="UTC", refresh_interval_s=0, clock=lambda: NOW))
    app.state.refresher.run_once()
    with TestClient(app) as client:
        yield client


def login(client: TestClient, password: str = PASSWORD, user: str = "manager"):
    return client.post("/auth/login", json={"username": user, "password": password})


@pytest.mark.parametrize("path", API_PATHS)
def test_every_api_route_needs_a_session_or_key(app_client: TestClient, path: str) -> None:
    r = app_client.get(path, follow_redirects=False)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = app_client.get(path, headers={"X-API-Key": "ffk_nope_nope"}, follow_redirects=False)
    assert r.status_code == 401


def test_login_numbers_logout(app_client: TestClient, db: Path) -> None:
    assert login(app_client, "wrong").status_code == 401
    assert login(app_client, user="nobody").status_code == 401
    r = login(app_client)
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    token = app_client.cookies[auth.SESSION_COOKIE]
    assert app_client.get("/auth/me").json() == {"kind": "user", "name": "manager"}

    ff = app_client.get("/api/footfall", params={"start": D.isoformat(), "end": D.isoformat()}).json()
    assert ff["totals"]["visitors"] == 6 and ff["totals"]["passersby"] == 14
    assert ff["totals"]["capture_rate"] == 0.3
    assert app_client.get("/api/now").json()["now_in_store"] == 5
    cmp = app_client.get("/api/compare").json()
    assert cmp["today"]["date"] == D.isoformat() and cmp["today"]["visitors"] == 6
    assert cmp["last_week_same_time"]["visitors"] == 1
    loyalty = app_client.get("/api/loyalty", params={"start": D.isoformat()}).json()
    assert (loyalty["new_visitors"], loyalty["returning_visitors"]) == (5, 1)
    assert app_client.get("/api/engagement", params={"start": D.isoformat()}).json()["visits"] == 6
    assert app_client.get("/api/sensors").json()["online"] == 1
    assert app_client.get("/api/rejects").json()["total"] == 2

    # Secrets are stored hashed only.
    conn = sqlite3.connect(db)
    assert token not in str(conn.execute("SELECT * FROM sessions").fetchall())
    assert PASSWORD not in str(conn.execute("SELECT * FROM users").fetchall())
    conn.close()

    assert app_client.post("/auth/logout").status_code == 200
    assert app_client.get("/api/now").status_code == 401
    app_client.cookies.set(auth.SESSION_COOKIE, token)  # a logged-out token stays dead
    assert app_client.get("/api/now").status_code == 401


def test_login_rate_limit(app_client: TestClient) -> None:
    for _ in range(login_limits.MAX_FAILURES):
        assert login(app_client, "guess").status_code == 401
    r = login(app_client)  # even the right password waits now
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0


def test_limiter_window_passes() -> None:
    now = [0.0]
    limiter = login_limits.LoginLimiter(login_limits.LoginLimits(pair_failures=2, window_s=60), clock=lambda: now[0])
    for t in (0, 1):
        now[0] = t
        limiter.finish(limiter.begin("u", "1.2.3.4"), False)
    now[0] = 2
    assert limiter.begin("u", "1.2.3.4").retry_after == pytest.approx(58)
    assert limiter.begin("other", "5.6.7.8").allowed
    now[0] = 61
    assert limiter.begin("u", "1.2.3.4").allowed


def test_api_keys_bearer_and_header_and_revoke(app_client: TestClient, db: Path) -> None:
    conn = store.connect(db)
    key = auth.create_api_key(conn, "bi-tool")
    with pytest.raises(auth.AuthError):
        auth.create_api_key(conn, "bi-tool")
    assert key not in str(conn.execute("SELECT * FROM api_keys").fetchall())
    assert app_client.get("/api/now", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert app_client.get("/api/now", headers={"X-API-Key": key}).status_code == 200
    assert app_client.get("/auth/me", headers={"X-API-Key": key}).json() == {"kind": "apikey", "name": "bi-tool"}
    assert auth.revoke_api_key(conn, "bi-tool")
    conn.close()
    assert app_client.get("/api/now", headers={"X-API-Key": key}).status_code == 401


def test_csv_exports(app_client: TestClient) -> None:
    login(app_client)
    r = app_client.get("/api/footfall", params={"start": D.isoformat(), "format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    lines = r.text.splitlines()
    header = lines[0].split(",")
    assert header[:5] == ["period", "visitors", "passersby", "capture_rate", "mean_dwell_s"]
    # Every figure with its range and what was heard; no estimate yet here, so heard = the figure.
    for name in ("visitors", "passersby", "capture_rate", "mean_dwell_s"):
        assert {f"{name}_low", f"{name}_high", f"{name}_heard"} <= set(header)
    assert "estimated" in header
    assert len(lines) == 26  # the header, 24 hours, the day's total (tests/test_api_csv_ranges.py)
    assert lines[-1].startswith("total,")
    row = dict(zip(header, lines[12].split(","), strict=True))
    assert (row["period"], row["visitors"], row["passersby"]) == (f"{D.isoformat()}T11", "2", "14")
    assert (row["visitors_heard"], row["estimated"]) == ("2", "False")
    r2 = app_client.get("/api/footfall/csv", params={"start": D.isoformat()})
    assert r2.status_code == 200 and r2.text == r.text
    for name in ("now", "engagement", "loyalty", "compare", "sensors", "rejects"):
        r = app_client.get(f"/api/{name}", params={"format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), name
        assert len(r.text.splitlines()) >= 2, name
    assert app_client.get("/api/bogus/csv").status_code == 404


def test_responses_match_their_models(app_client: TestClient) -> None:
    """The app returns the metrics' dicts as they are (speed); their shape must stay the models'."""
    login(app_client)
    day = {"start": (D - timedelta(days=7)).isoformat(), "end": D.isoformat()}
    checks = [
        ("/api/now", {}, api_models.Now),
        ("/api/compare", {}, api_models.Compare),
        ("/api/footfall", {**day, "granularity": "hour"}, api_models.Footfall),
        ("/api/footfall", {**day, "granularity": "week"}, api_models.Footfall),
        ("/api/engagement", day, api_models.Engagement),
        ("/api/loyalty", day, api_models.Loyalty),
        ("/api/sensors", {}, api_models.Sensors),
        ("/api/rejects", {}, api_models.Rejects),
    ]
    for path, params, model in checks:
        body = app_client.get(path, params=params).json()
        assert model.model_validate(body).model_dump() == body, path
        assert set(body) == set(model.model_fields), path


def test_openapi_schema(app_client: TestClient) -> None:
    schema = app_client.get("/openapi.json").json()
    for path in ("/api/now", "/api/footfall", "/api/engagement", "/api/loyalty", "/api/compare", "/api/sensors"):
        assert path in schema["paths"], path
    assert {"Footfall", "Engagement", "Loyalty", "Compare", "Now", "Sensors"} <= set(schema["components"]["schemas"])
    params = {p["name"] for p in schema["paths"]["/api/footfall"]["get"]["parameters"]}
    assert {"start", "end", "granularity", "zone", "format"} <= params


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-02-30"}, "start must be a date"),
        ({"start": "yesterday"}, "start must be a date"),
        ({"start": "2026-03-10", "end": "2026-03-01"}, "before start"),
        ({"start": "2025-01-01", "end": "2026-03-10", "granularity": "day"}, "too long"),
        ({"start": "2026-02-01", "end": "2026-03-10", "granularity": "hour"}, "too long"),
        ({"granularity": "minute"}, "granularity must be"),
        ({"format": "xml"}, "format must be"),
    ],
)
def test_bad_input_is_a_clear_400(app_client: TestClient, query: dict[str, str], message: str) -> None:
    login(app_client)
    r = app_client.get("/api/footfall", params=query)
    assert r.status_code == 400
    assert message in r.json()["detail"]


def test_bad_types_are_422(app_client: TestClient) -> None:
    login(app_client)
    assert app_client.get("/api/footfall", params={"include_excluded": "perhaps"}).status_code == 422
    assert app_client.post("/auth/login", json={"username": "x"}).status_code == 422


def test_pages_assets_and_headers(app_client: TestClient) -> None:
    r = app_client.get("/")
    assert r.status_code == 200 and "now-in-store" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert app_client.get("/login").status_code == 200
    assert app_client.get("/docs").status_code == 404  # Swagger UI would need a CDN
    for name in ("app.js", "charts.js", "login.js", "style.css"):
        assert app_client.get(f"/static/{name}").status_code == 200, name
    # No CDN: nothing in the shipped assets points outside the hub.
    for f in STATIC.iterdir():
        text = f.read_text()
        for ref in ('src="http', 'href="http', "url(http", "@import", 'fetch("http'):
            assert ref not in text, (f.name, ref)


def test_request_connections_are_read_only(app_client: TestClient) -> None:
    pool = app_client.app.state.pool
    with pool.connection() as conn, pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM visits")


def test_cli_user_and_apikey(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    register_web(parser.add_subparsers())
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    args = parser.parse_args(["user", "add", "--db", str(db), "owner", "--password-stdin"])
    assert args.func(args) == 0
    conn = store.connect(db)
    assert auth.authenticate(conn, "owner", "another-password") is not None
    args = parser.parse_args(["apikey", "create", "--db", str(db), "pos"])
    assert args.func(args) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert auth.api_key_principal(conn, key) == auth.Principal("apikey", "pos")
    args = parser.parse_args(["apikey", "revoke", "--db", str(db), "pos"])
    assert args.func(args) == 0
    assert auth.api_key_principal(conn, key) is None
    conn.close()
    args = parser.parse_args(["serve", "--db", str(db), "--port", "9999", "--tz", "Europe/Paris"])
    assert (args.port, args.tz) == (9999, "Europe/Paris")


def test_unknown_zone_is_a_404_naming_the_known_zones(app_client: TestClient) -> None:
    login(app_client)
    day = {"start": D.isoformat(), "end": D.isoformat()}
    for path in ("/api/footfall", "/api/engagement"):
        # A known zone (a sensor, or a zone in the summaries) still answers; an empty one is the store.
        assert app_client.get(path, params={**day, "zone": "entrance"}).status_code == 200, path
        assert app_client.get(path, params={**day, "zone": ""}).json()["zone"] is None, path
        for fmt in ("json", "csv"):
            r = app_client.get(path, params={**day, "zone": "entrnce", "format": fmt})
            assert r.status_code == 404, (path, fmt)
            assert r.json() == {"detail": "unknown zone 'entrnce'; known zones: entrance, floor"}, path
    floor = app_client.get("/api/footfall", params={**day, "zone": "floor"}).json()
    assert floor["zone"] == "floor" and floor["totals"]["visitors"] == 6


def test_unknown_zone_before_any_sensor_reported(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    conn = store.connect(db)
    key = auth.create_api_key(conn, "t")
    conn.commit()
    conn.close()
    with TestClient(create_app(db, WebSettings(tz="UTC", refresh_interval_s=0, clock=lambda: NOW))) as client:
        r = client.get("/api/footfall", params={"zone": "s1"}, headers={"X-API-Key": key})
    assert r.status_code == 404
    assert r.json()["detail"] == "unknown zone 's1'; known zones: none yet (no sensor has reported)"


@pytest.mark.parametrize(
    ("path", "query", "field", "message"),
    [
        ("/o2o", {"end": "9999-12-31"}, "end", "end must be a day from 1970-01-01 to 2027-03-11 (a year past today)"),
        ("/o2o", {"end": "2027-03-12"}, "end", "end must be a day from 1970-01-01 to 2027-03-11"),
        ("/o2o", {"end": "0001-01-03"}, "end", "end must be a day from 1970-01-01"),
        ("/o2o", {"start": "1969-12-31", "end": "1970-01-02"}, "start", "start must be a day from 1970-01-01"),
        ("/o2o", {"start": "2026-02-30"}, "start", "start must be a date as YYYY-MM-DD, got '2026-02-30'"),
        ("/o2o", {"start": "2026-03-10", "end": "2026-03-01"}, "end", "end 2026-03-01 is before start 2026-03-10"),
        ("/api/o2o/report", {"end": "9999-12-31"}, "end", "end must be a day from 1970-01-01"),
        ("/api/o2o/invoice", {"start": "2026-01-01", "end": "9999-12-31"}, "end", "a year past today"),
        ("/api/o2o/register", {"end": "50000-01-01"}, "end", "end must be a date as YYYY-MM-DD"),
    ],
)
def test_o2o_dates_out_of_range_are_a_clear_422(
    app_client: TestClient, path: str, query: dict[str, str], field: str, message: str
) -> None:
    # A far-future end date was a 500 (the page's dates overflowed Python's datetime).
    login(app_client)
    r = app_client.get(path, params=query)
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]  # FastAPI's own shape for a query parameter it refuses
    assert error["loc"] == ["query", field] and error["type"] == "value_error"
    assert message in error["msg"]


def test_o2o_dates_within_range_still_answer(app_client: TestClient) -> None:
    login(app_client)
    assert app_client.get("/o2o", params={"end": "2027-03-11"}).status_code == 200  # a year past today (NOW)
    assert app_client.get("/o2o", params={"start": "1970-01-01", "end": "1970-01-05"}).status_code == 200
    r = app_client.get("/api/o2o/report", params={"end": D.isoformat()})
    assert r.status_code == 200 and r.json()["end"] == NOW - 15.5 * 3600 + 86400


def test_every_csv_export_has_its_header_even_with_no_rows(tmp_path: Path) -> None:
    from footfall.hub.o2o import reports, scenarios

    db = tmp_path / "empty.db"
    conn = store.connect(db)
    key = auth.create_api_key(conn, "t")
    conn.commit()
    conn.close()
    names = ["now", "footfall", "engagement", "loyalty", "compare", "occupancy", "sensors", "rejects"]
    names += ["segments", "clusters"]
    with TestClient(create_app(db, WebSettings(tz="UTC", refresh_interval_s=0, clock=lambda: NOW))) as client:
        client.headers["X-API-Key"] = key
        for path in [f"/api/{n}/csv" for n in names] + ["/api/o2o/report?format=csv"]:
            r = client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), path
            assert r.text.endswith("\n") and r.text.splitlines()[0].count(",") >= 2, (path, r.text)
        # The O2O report had no scenario: 0 bytes, which a spreadsheet import refuses.
        empty = client.get("/api/o2o/report", params={"format": "csv"}).text
        assert empty.splitlines() == [",".join(reports.REPORT_COLUMNS)]
        conn = store.connect(db)
        scenarios.add(conn, scenarios.Scenario(name="quick", target="passersby"))
        conn.commit()
        conn.close()
        lines = client.get("/api/o2o/report", params={"format": "csv"}).text.splitlines()
        assert lines[0] == empty.strip() and lines[1].startswith("quick,")  # the same header with rows
