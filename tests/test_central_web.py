"""Central web side: roles and per-store access, sessions and API keys, pages without CDNs,
segment export over HTTP, the CLI."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from footfall.cli import main as footfall_main
from footfall.cloud_sync.central import apply, auth
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.pages_web import STATIC
from footfall.cloud_sync.central.testing import profile_record
from tests import test_central_sync as shared

database = shared.database
pg_url = shared.pg_url
NOW = time.time()


def key(db: Database, role: str, stores: list[str] | None = None) -> dict[str, str]:
    with db.connect() as conn:
        return {"X-API-Key": auth.create_api_key(conn, f"{role}-{time.monotonic_ns()}", role=role, stores=stores)}


@pytest.fixture
def client(database: Database) -> Iterator[TestClient]:
    for store, devices in (("north", [1, 2, 3]), ("south", [3, 4])):
        with database.connect() as conn:
            conn.execute("INSERT INTO hubs (hub_id, secret, created) VALUES (?, 'x', 0)", (store,))
        records = [
            profile_record(
                f"{i:032x}", last_seen=NOW - 3600, first_seen=NOW - 7200, phone_md5=f"{i:032x}", consent={"pd": True}
            )
            for i in devices
        ]
        apply.apply_batch(database, store, {"batch_id": store, "seq": 1, "records": records})
    with TestClient(create_app(CentralConfig(), db=database)) as c:
        yield c


def test_roles_and_per_store_access(client: TestClient, database: Database):
    ro, mk, admin = key(database, "readonly"), key(database, "marketing"), key(database, "admin")
    north = key(database, "marketing", ["north"])
    assert client.get("/api/v1/stores").status_code == 401
    assert client.get("/api/v1/stores", headers={"X-API-Key": "ffk_bad_key"}).status_code == 401
    # Read-only reads, cannot create, recount, export or manage.
    assert [s["hub_id"] for s in client.get("/api/v1/stores", headers=ro).json()["stores"]] == ["north", "south"]
    rule = {"field": "stores_visited", "op": ">=", "value": 2}
    assert client.post("/api/v1/segments", json={"id": "two", "rule": rule}, headers=ro).status_code == 403
    assert client.post("/api/v1/consents/withdraw", json={"device": "x"}, headers=mk).status_code == 403
    assert client.get("/api/v1/hubs", headers=mk).status_code == 403
    assert client.get("/api/v1/hubs", headers=admin).status_code == 200
    # Marketing creates and recounts a chain segment; bad rules are a 400 with the path.
    r = client.post("/api/v1/segments", json={"id": "two", "name": "Two stores", "rule": rule}, headers=mk)
    assert r.status_code == 201, r.text
    bad = client.post("/api/v1/segments", json={"id": "bad", "rule": {"field": "x", "op": "=", "value": 1}}, headers=mk)
    assert bad.status_code == 400 and "unknown field" in bad.json()["error"]
    assert client.post("/api/v1/segments/two/recount", headers=ro).status_code == 403
    assert client.post("/api/v1/segments/two/recount", headers=mk).json()["size"] == 1
    # The north-only manager: sees north only, its segments default to north, the chain one is hidden.
    assert [s["hub_id"] for s in client.get("/api/v1/stores", headers=north).json()["stores"]] == ["north"]
    r = client.post(
        "/api/v1/segments", json={"id": "n", "rule": {"field": "visits", "op": ">=", "value": 1}}, headers=north
    )
    assert r.json()["stores"] == ["north"]
    assert (
        client.post("/api/v1/segments", json={"id": "s", "rule": rule, "stores": ["south"]}, headers=north).status_code
        == 403
    )
    assert [s["id"] for s in client.get("/api/v1/segments", headers=north).json()["segments"]] == ["n"]
    assert client.get("/api/v1/segments/two/versions", headers=north).status_code == 404
    assert client.post("/api/v1/segments/n/recount", headers=north).json()["size"] == 3
    # Profiles: device 3 is in both stores; the north manager sees only its north side.
    d3 = f"{3:032x}"
    full = client.get(f"/api/v1/profiles/{d3}", headers=ro).json()
    assert [s["store"] for s in full["stores"]] == ["north", "south"]
    assert all(i["value"] is None for i in full["identifiers"] if i["type"] != "mac_hash")  # no hash on screen
    assert full["consent"]["pd_consent"] == 1
    assert [s["store"] for s in client.get(f"/api/v1/profiles/{d3}", headers=north).json()["stores"]] == ["north"]
    assert client.get(f"/api/v1/profiles/{4:032x}", headers=north).status_code == 404
    found = client.get("/api/v1/profiles?q=0000000000", headers=north).json()["profiles"]
    assert sorted(p["device"] for p in found) == [f"{i:032x}" for i in (1, 2, 3)]
    assert client.get("/api/v1/profiles?q=%25'", headers=ro).status_code == 400


def test_sessions_with_hashed_passwords(client: TestClient, database: Database):
    with database.connect() as conn:
        auth.add_user(conn, "maria", "correct horse battery", role="marketing", stores=["south"])
        stored = conn.scalar("SELECT password_hash FROM users WHERE username = 'maria'")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert client.post("/api/v1/login", json={"username": "maria", "password": "wrong password"}).status_code == 401
    r = client.post("/api/v1/login", json={"username": "maria", "password": "correct horse battery"})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    me = client.get("/api/v1/me").json()
    assert me == {"name": "maria", "kind": "user", "role": "marketing", "stores": ["south"]}
    with database.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM sessions") == 1
        token = client.cookies.get(auth.SESSION_COOKIE)
        assert conn.scalar("SELECT COUNT(*) FROM sessions WHERE token_hash = ?", (token,)) == 0  # stored hashed
    client.post("/api/v1/logout")
    client.cookies.clear()
    assert client.get("/api/v1/me").status_code == 401


def test_login_limits_count_the_client_behind_the_proxy(database: Database, monkeypatch: pytest.MonkeyPatch):
    """Central sits behind a TLS proxy on 127.0.0.1: with the proxy trusted, wrong passwords
    from one client lock out that client only, not every user arriving through the proxy."""
    monkeypatch.setenv("FOOTFALL_TRUSTED_PROXIES", "127.0.0.1")
    with database.connect() as conn:
        auth.add_user(conn, "maria", "correct horse battery", role="marketing", stores=["south"])
    app = create_app(CentralConfig(), db=database)
    with TestClient(app, client=("127.0.0.1", 40000)) as proxy:
        attacker = {"X-Forwarded-For": "203.0.113.9"}
        codes = [
            proxy.post("/api/v1/login", json={"username": "maria", "password": "nope"}, headers=attacker).status_code
            for _ in range(8)
        ]
        assert codes.count(401) == 5 and codes[-1] == 429
        ok = proxy.post(
            "/api/v1/login",
            json={"username": "maria", "password": "correct horse battery"},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert ok.status_code == 200
        long_name = proxy.post("/api/v1/login", json={"username": "x" * 65, "password": "p"}, headers=attacker)
        assert long_name.status_code == 422


def test_pages_are_self_contained(client: TestClient):
    for path in ("/", "/login", "/optout", "/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200, path
    for f in STATIC.iterdir():
        text = f.read_text()
        for ref in ('src="http', 'href="http', "url(http", "@import", 'fetch("http'):
            assert ref not in text, (f.name, ref)
    assert "default-src 'self'" in client.get("/").headers["content-security-policy"]


def test_export_over_http(client: TestClient, database: Database):
    mk = key(database, "marketing")
    ro = key(database, "readonly")
    client.post("/api/v1/segments", json={"id": "all", "rule": {"field": "visits", "op": ">=", "value": 1}}, headers=mk)
    assert client.get("/api/v1/segments/all/export?format=msisdn", headers=mk).status_code == 409  # not recounted
    client.post("/api/v1/segments/all/recount", headers=mk)
    r = client.get("/api/v1/segments/all/export?format=msisdn", headers=mk)
    assert r.status_code == 200 and r.text.splitlines()[0] == "msisdn" and len(r.text.splitlines()) == 5
    assert "5000" in r.headers["x-footfall-warning"]
    assert client.get("/api/v1/segments/all/export?format=msisdn", headers=ro).status_code == 403
    j = client.get("/api/v1/segments/all/export?format=json", headers=mk).json()
    assert j["count"] == 4
    assert client.get("/api/v1/segments/all/export?format=xml", headers=mk).status_code == 422
    assert client.post("/api/v1/segments/all/push?connector=nope", headers=mk).status_code == 404


def test_cli_hub_user_segment_export(tmp_path: Path, capsys):
    db = str(tmp_path / "c.db")
    assert footfall_main(["central", "hub", "add", "store-7", "--db", db]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(secret) == 64
    assert footfall_main(["central", "hub", "add", "store-7", "--db", db]) == 1
    assert "exists" in capsys.readouterr().err
    import sys

    sys.stdin = io.StringIO("long enough password\n")
    try:
        assert footfall_main(["central", "user", "add", "ann", "--role", "admin", "--password-stdin", "--db", db]) == 0
    finally:
        sys.stdin = sys.__stdin__
    database = Database(db)
    records = [profile_record(f"{i:032x}", phone_md5=f"{i:032x}", consent={"pd": True}) for i in range(12)]
    apply.apply_batch(database, "store-7", {"batch_id": "x", "seq": 1, "records": records})
    rule = '{"field": "visits", "op": ">=", "value": 1}'
    assert footfall_main(["central", "segment", "add", "all", "--rule", rule, "--db", db]) == 0
    assert footfall_main(["central", "export", "all", "--db", db, "--out", str(tmp_path)]) == 1  # no recount yet
    assert footfall_main(["central", "segment", "recount", "all", "--db", db]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert (
        footfall_main(["central", "export", "all", "--db", db, "--out", str(out), "--max-bytes", str(7 + 33 * 5)]) == 0
    )
    captured = capsys.readouterr()
    assert "warning" in captured.err and len(list(out.glob("all_*.csv"))) == 3
    assert footfall_main(["central", "export", "all", "--format", "csv", "--db", db]) == 0
    assert capsys.readouterr().out.startswith("device,stores")
