"""POS guessing limits on the real FastAPI app: unknown codes per key and per address lock out,
parallel guesses get at most the limit through, real codes still redeem exactly once, and code
settings a guesser would break are refused when configured."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from footfall.hub import store
from footfall.hub.api import WebSettings
from footfall.hub.api import create_app as hub_app
from footfall.hub.o2o import coupons, guessing, pos, scenarios
from footfall.hub.o2o.coupons import Generator

LIMITS = guessing.PosLimits(key_failures=5, address_failures=8, window_s=60)
UNKNOWN = [f"ZZZZZZZZ{i:02d}" for i in range(100)]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "hub.db"
    store.connect(path).close()
    return path


def issue(db: Path, n: int = 1, gen: Generator | None = None) -> list[str]:
    conn = store.connect(db)
    try:
        with conn:
            return [
                coupons.issue(conn, gen or Generator(value=20), scenario_id=None, device_key=f"d{i}", partner_hash=None)
                for i in range(n)
            ]
    finally:
        conn.close()


def new_key(db: Path, store_id: str = "store-1") -> str:
    conn = store.connect(db)
    try:
        return pos.create_key(conn, store_id)
    finally:
        conn.close()


def pos_app(db: Path, clock: Callable[[], float], **kw) -> FastAPI:
    app = FastAPI()
    app.include_router(pos.pos_router(db, limits=LIMITS, limit_clock=clock, trusted_proxies=[], **kw))
    return app


def at(app: FastAPI, address: str) -> TestClient:
    return TestClient(app, client=(address, 50000))


def post(client: TestClient, key: str, path: str, code: str, amount: float = 100.0):
    body = {"code": code} if path == "cancel" else {"code": code, "amount": amount}
    return client.post(f"/api/o2o/pos/{path}", json=body, headers={"X-POS-Key": key})


def redeemed(db: Path, code: str) -> bool:
    conn = store.connect(db)
    try:
        return conn.execute("SELECT redeemed_at FROM o2o_coupons WHERE code = ?", (code,)).fetchone()[0] is not None
    finally:
        conn.close()


def test_unknown_codes_lock_the_key_out_for_a_window_with_one_warning(db, caplog):
    (real,) = issue(db)
    key = new_key(db)
    clock = Clock()
    app = pos_app(db, clock)
    till = at(app, "10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="footfall.hub.o2o.pos"):
        for code in UNKNOWN[: LIMITS.key_failures]:
            assert post(till, key, "redeem", code).json()["error"] == "unknown"
        refused = post(till, key, "redeem", UNKNOWN[50])
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert refused.headers["Retry-After"] == "60"
        # Locked means locked: a real code is neither redeemed nor confirmed to exist.
        again = post(till, key, "redeem", real)
        assert again.status_code == 429 and again.json() == refused.json()
        assert not redeemed(db, real)
    lockouts = [r for r in caplog.records if "locked" in r.getMessage()]
    assert len(lockouts) == 1 and lockouts[0].levelno == logging.WARNING
    line = lockouts[0].getMessage()
    assert "POS coupon lookups locked for key #1 pos_" in line and "store-1" in line
    assert "'ZZ'..." in line and UNKNOWN[LIMITS.key_failures - 1] not in line  # a prefix, never the code

    report = till.get("/api/o2o/pos/limits", headers={"X-POS-Key": key}).json()
    assert report["refused"] == {"key": 2, "address": 0} and report["lockouts"] == {"key": 1, "address": 0}
    assert report["locked_now"] == {"key": 1, "address": 0} and report["guesses_per_day_per_key"] == 5 * 1441
    assert till.get("/api/o2o/pos/errors", headers={"X-POS-Key": key}).json() == {"unknown": 5, "rate_limited": 2}

    clock.t += LIMITS.window_s
    assert post(till, key, "redeem", real).status_code == 200
    assert till.get("/api/o2o/pos/limits", headers={"X-POS-Key": key}).json()["locked_now"]["key"] == 0


def test_validate_and_cancel_count_like_redeem_and_found_codes_do_not(db):
    codes = issue(db, 3)
    key = new_key(db)
    till = at(pos_app(db, Clock()), "10.0.0.1")
    # Real codes, and their other refusals (already redeemed, not redeemed), are not guesses.
    for _ in range(3):
        for code in codes:
            assert post(till, key, "validate", code).status_code == 200
    assert post(till, key, "redeem", codes[0]).status_code == 200
    assert post(till, key, "redeem", codes[0]).json()["error"] == "already_redeemed"
    assert post(till, key, "cancel", codes[1]).json()["error"] == "not_redeemed"
    # Unknown codes count the same on all three endpoints.
    for path, code in zip(["validate", "redeem", "cancel", "validate", "cancel"], UNKNOWN[:5], strict=True):
        assert post(till, key, path, code).json()["error"] == "unknown"
    assert post(till, key, "validate", codes[2]).status_code == 429


def test_parallel_guesses_from_one_key_get_at_most_the_limit_through(db):
    issue(db)
    key = new_key(db)
    app = pos_app(db, Clock())
    n = 40
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    lock = threading.Lock()

    def guess(i: int) -> None:
        client = at(app, f"10.1.0.{i}")  # every guess from its own address: only the key limits them
        barrier.wait()
        r = post(client, key, "validate" if i % 2 else "redeem", UNKNOWN[i])
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == n
    assert statuses.count(404) == LIMITS.key_failures
    assert statuses.count(429) == n - LIMITS.key_failures


def test_a_real_code_redeems_exactly_once_under_parallel_tills(db):
    (code,) = issue(db)
    key = new_key(db)
    app = pos_app(db, Clock())
    n = 30  # far more than the failure limit: found codes never take a slot
    barrier = threading.Barrier(n)
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def till(i: int) -> None:
        client = at(app, "10.0.0.9")
        barrier.wait()
        r = client.post(
            "/api/o2o/pos/redeem", json={"code": code, "amount": 500, "receipt_id": f"R{i}"}, headers={"X-POS-Key": key}
        )
        with lock:
            results.append((r.status_code, r.json()))

    threads = [threading.Thread(target=till, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n
    assert [b["discount"] for s, b in results if s == 200] == [100.0]
    assert {(s, b.get("error")) for s, b in results if s != 200} == {(409, "already_redeemed")}
    conn = store.connect(db)
    assert conn.execute("SELECT count(*) FROM o2o_redemptions").fetchone()[0] == 1
    conn.close()


def test_a_locked_key_or_address_leaves_other_keys_and_addresses_alone(db):
    codes = issue(db, 4)
    key_a, key_b, key_c = new_key(db), new_key(db), new_key(db, "store-2")
    app = pos_app(db, Clock())
    here, there, elsewhere = at(app, "10.0.0.1"), at(app, "10.0.0.2"), at(app, "10.0.0.3")
    for code in UNKNOWN[:5]:
        post(here, key_a, "validate", code)
    assert post(here, key_a, "validate", codes[0]).status_code == 429
    # The key is locked wherever it is used (a stolen key moves); other keys, even from the
    # same address, are not.
    assert post(there, key_a, "validate", codes[0]).status_code == 429
    assert post(here, key_b, "validate", codes[0]).status_code == 200
    assert post(there, key_b, "redeem", codes[0]).status_code == 200
    # An address that spreads its guesses over keys is locked for every key, and only it.
    for code in UNKNOWN[10:13]:
        assert post(elsewhere, key_b, "validate", code).status_code == 404  # key_b: 3 of 5
    for code in UNKNOWN[13:16]:
        assert post(elsewhere, key_c, "validate", code).status_code == 404  # address: 3 + 3 = 6 of 8
    r = post(elsewhere, key_b, "validate", UNKNOWN[16])
    assert r.status_code == 404  # key_b: 4 of 5; the address: 7 of 8
    assert post(elsewhere, key_c, "validate", UNKNOWN[17]).status_code == 404  # address: 8th, locks it
    refused = post(elsewhere, key_c, "validate", codes[1])
    assert refused.status_code == 429 and "client address" in refused.json()["detail"]
    assert post(there, key_c, "validate", codes[1]).status_code == 200
    assert post(there, key_c, "redeem", codes[1]).status_code == 200


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(db):
    issue(db)
    key = new_key(db)
    limits = guessing.PosLimits(key_failures=100, address_failures=2, window_s=60)
    app = FastAPI()
    app.include_router(pos.pos_router(db, limits=limits, trusted_proxies=["127.0.0.1"]))
    proxy = at(app, "127.0.0.1")

    def via(client_ip: str, code: str) -> int:
        return proxy.post(
            "/api/o2o/pos/validate", json={"code": code}, headers={"X-POS-Key": key, "X-Forwarded-For": client_ip}
        ).status_code

    assert [via("192.0.2.1", c) for c in UNKNOWN[:3]] == [404, 404, 429]
    assert via("192.0.2.2", UNKNOWN[3]) == 404
    # A client that is not the proxy cannot pick the address it is counted as.
    direct = at(app, "198.51.100.7")
    hdr = {"X-POS-Key": key, "X-Forwarded-For": "192.0.2.99"}
    got = [direct.post("/api/o2o/pos/validate", json={"code": c}, headers=hdr).status_code for c in UNKNOWN[4:7]]
    assert got == [404, 404, 429]


def test_the_hub_app_mounts_the_default_limits(db):
    key = new_key(db)
    client = TestClient(hub_app(db, WebSettings(refresh_interval_s=0)), client=("10.0.0.1", 50000))
    statuses = [post(client, key, "validate", code).status_code for code in UNKNOWN[:21]]
    assert statuses == [404] * 20 + [429]
    limits = client.get("/api/o2o/pos/limits", headers={"X-POS-Key": key}).json()
    assert limits["key_failures"] == 20 and limits["window_s"] == 600 and limits["guesses_per_day_per_key"] == 2900


# ---------------------------------------------------------------- code settings


def test_the_issues_case_is_refused_with_what_would_do(db):
    # Issue 14: 8-digit codes, 5,000 outstanding, found within seconds.
    gen = Generator(charset="digits", length=8, bindings_limit=5000)
    assert guessing.find_probability(5000, guessing.code_space(gen), guessing.DEFAULT_LIMITS.guesses_per_day()) > 0.5
    conn = store.connect(db)
    with pytest.raises(guessing.WeakCodesError, match=r"too easy to guess.*10,000,000 possible.*use length >= 11"):
        scenarios.add(conn, scenarios.Scenario(name="weak", coupon=gen))
    assert conn.execute("SELECT count(*) FROM o2o_scenarios").fetchone()[0] == 0
    # Without a bindings limit the rule plans for 10,000 outstanding codes.
    with pytest.raises(ValueError, match="10,000 outstanding"):
        scenarios.add(conn, scenarios.Scenario(name="weak", coupon=Generator(length=6)))
    # Few enough codes, or long enough ones, are fine.
    scenarios.add(
        conn, scenarios.Scenario(name="small", coupon=Generator(charset="digits", length=8, bindings_limit=30))
    )
    scenarios.add(conn, scenarios.Scenario(name="long", coupon=Generator(charset="digits", length=11)))
    scenarios.add(conn, scenarios.Scenario(name="default", coupon=Generator()))
    scenarios.add(conn, scenarios.Scenario(name="ean", coupon=Generator(type="barcode")))
    conn.close()


def test_codes_already_outstanding_count_against_new_settings(db):
    issue(db, 20, Generator(charset="digits", length=8))
    conn = store.connect(db)
    with pytest.raises(guessing.WeakCodesError, match="with 40 outstanding"):
        scenarios.add(
            conn, scenarios.Scenario(name="more", coupon=Generator(charset="digits", length=8, bindings_limit=20))
        )
    scenarios.add(
        conn, scenarios.Scenario(name="fits", coupon=Generator(charset="digits", length=8, bindings_limit=14))
    )
    conn.close()


def test_issue_stops_at_the_bound_for_settings_stored_before_the_rule(db):
    gen = Generator(charset="digits", length=8)
    limit = guessing.max_outstanding(gen)
    assert limit == 34
    issue(db, limit, gen)
    with pytest.raises(coupons.CouponError, match="34 codes of this format are outstanding") as exc:
        issue(db, 1, gen)
    assert exc.value.code == "too_guessable"


def test_the_cli_refuses_weak_settings_with_a_clear_error(db, capsys):
    from footfall.hub.o2o.cli import register_o2o

    parser = argparse.ArgumentParser()
    register_o2o(parser.add_subparsers())
    args = parser.parse_args(
        ["o2o", "scenario", "add", "weak", "--db", str(db), "--length", "8", "--charset", "digits"]
    )
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: coupon codes too easy to guess") and "use length >= 11" in err
