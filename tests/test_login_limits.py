"""Login limits through the real app: per (user, address) lockouts that an attacker elsewhere
cannot use against the owner, race-free under parallel guesses, password spraying, a
distributed attack that slows but never locks out, trusted proxies, and the audit log."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from footfall.hub import auth, forwarded, login_limits, store
from footfall.hub.api import WebSettings, create_app
from tests.conftest import free_port, wait_port

PASSWORD = "correct horse battery"
WRONG = "not-the-password"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "hub.db"
    conn = store.connect(path)
    auth.add_user(conn, "manager", PASSWORD)
    auth.add_user(conn, "assistant", PASSWORD)
    conn.commit()
    conn.close()
    return path


def make_app(db: Path, limits: login_limits.LoginLimits | None = None, clock: Clock | None = None, **settings):
    app = create_app(
        db, WebSettings(refresh_interval_s=0, login_limits=limits or login_limits.LoginLimits(), **settings)
    )
    if clock is not None:
        app.state.limiter = login_limits.LoginLimiter(app.state.settings.login_limits, clock=clock)
    return app


def client_at(app, address: str) -> TestClient:
    """A client whose socket peer is ``address``."""
    return TestClient(app, client=(address, 40000))


def login(client: TestClient | httpx.Client, password: str, user: str = "manager", **kw) -> httpx.Response:
    return client.post("/auth/login", json={"username": user, "password": password}, **kw)


# ------------------------------------------------------------ a real server, real parallelism
@pytest.fixture
def server(db: Path) -> Iterator[str]:
    import uvicorn

    app = make_app(db)
    port = free_port()
    # As hub/serve.py runs it: uvicorn's own proxy_headers would take X-Forwarded-For from
    # 127.0.0.1 and hand the limiter whatever address the client wrote.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_port(port)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def from_address(base: str, local: str) -> httpx.Client:
    # All of 127.0.0.0/8 is loopback on Linux: binding the client's end gives the server a
    # genuinely different socket peer, no header involved.
    return httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=local), timeout=60)


def test_parallel_guesses_cannot_outrun_the_limit(server: str) -> None:
    limit = login_limits.LoginLimits().pair_failures
    with from_address(server, "127.0.0.1") as attacker:
        barrier = threading.Barrier(40)

        def guess(i: int) -> int:
            barrier.wait()
            # A forged header from an untrusted peer changes nothing.
            return login(attacker, f"{WRONG}-{i}", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code

        with ThreadPoolExecutor(40) as pool:
            codes = list(pool.map(guess, range(40)))
        assert codes.count(401) == limit, codes  # the issue saw 14-25 guesses get through
        assert codes.count(429) == 40 - limit
        # Locked for this pair: even the right password waits here.
        r = login(attacker, PASSWORD)
        assert r.status_code == 429
        assert 0 < int(r.headers["retry-after"]) <= login_limits.FAILURE_WINDOW_S
        # Another user from the same address is not locked (spraying has its own, higher limit).
        assert login(attacker, PASSWORD, user="assistant").status_code == 200

    # The real manager elsewhere is not affected.
    with from_address(server, "127.0.0.2") as manager:
        r = login(manager, PASSWORD)
        assert r.status_code == 200, r.text
        assert manager.get("/auth/me").json() == {"kind": "user", "name": "manager"}


def test_parallel_limiter_admits_exactly_the_limit() -> None:
    """The check and the count are one step: 200 threads released at once, 5 admitted."""
    limiter = login_limits.LoginLimiter()
    barrier = threading.Barrier(200)

    def go(_: int) -> bool:
        barrier.wait()
        attempt = limiter.begin("manager", "203.0.113.9")
        if attempt.allowed:
            limiter.finish(attempt, False)
        return attempt.allowed

    with ThreadPoolExecutor(200) as pool:
        admitted = sum(pool.map(go, range(200)))
    assert admitted == login_limits.LoginLimits().pair_failures


# ------------------------------------------------------------ windows, reset, spraying
def test_locked_pair_unlocks_after_the_window_and_success_resets_it(db: Path) -> None:
    clock = Clock()
    limits = login_limits.LoginLimits(pair_failures=3, window_s=60)
    app = make_app(db, limits, clock)
    with client_at(app, "192.0.2.10") as c:
        for _ in range(3):
            assert login(c, WRONG).status_code == 401
        r = login(c, PASSWORD)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) == 60
        clock.t += 30
        assert int(login(c, PASSWORD).headers["retry-after"]) == 30
        clock.t += 30  # the first failure leaves the window
        assert login(c, PASSWORD).status_code == 200
        # The success cleared the pair: three fresh tries, not one.
        for _ in range(3):
            assert login(c, WRONG).status_code == 401
        assert login(c, WRONG).status_code == 429


def test_lockout_at_one_address_does_not_reach_another(db: Path) -> None:
    app = make_app(db, clock=Clock())
    with client_at(app, "192.0.2.66") as attacker:
        for _ in range(login_limits.MAX_FAILURES):
            assert login(attacker, WRONG).status_code == 401
        assert login(attacker, PASSWORD).status_code == 429
    with client_at(app, "192.0.2.20") as manager:
        assert login(manager, PASSWORD).status_code == 200


def test_password_spraying_from_one_address_is_limited(db: Path) -> None:
    clock = Clock()
    limits = login_limits.LoginLimits(pair_failures=5, address_failures=6, window_s=300)
    app = make_app(db, limits, clock)
    names = ["manager", "assistant", "admin", "root", "owner", "staff"]
    with client_at(app, "192.0.2.99") as sprayer:
        for name in names:  # one guess per name: no pair comes near its limit
            assert login(sprayer, WRONG, user=name).status_code == 401
        r = login(sprayer, WRONG, user="cashier")
        assert r.status_code == 429
        assert "address" in r.json()["detail"]
        # A right password from that address waits too; a known account cannot launder the count.
        assert login(sprayer, PASSWORD, user="assistant").status_code == 429
    with client_at(app, "192.0.2.20") as manager:
        assert login(manager, PASSWORD).status_code == 200
    clock.t += 301
    with client_at(app, "192.0.2.99") as sprayer:
        assert login(sprayer, PASSWORD, user="assistant").status_code == 200


def test_success_does_not_reset_the_address_count() -> None:
    limiter = login_limits.LoginLimiter(login_limits.LoginLimits(address_failures=3))
    for name in ("a", "b"):
        limiter.finish(limiter.begin(name, "192.0.2.5"), False)
    limiter.finish(limiter.begin("mine", "192.0.2.5"), True)  # the attacker's own account
    limiter.finish(limiter.begin("c", "192.0.2.5"), False)
    assert limiter.begin("d", "192.0.2.5").reason == "address"


def test_database_error_gives_the_slot_back() -> None:
    limiter = login_limits.LoginLimiter(login_limits.LoginLimits(pair_failures=1))
    limiter.finish(limiter.begin("manager", "192.0.2.5"), None)
    assert limiter.begin("manager", "192.0.2.5").allowed


# ------------------------------------------------------------ distributed attack on one name
def test_distributed_attack_slows_but_never_locks_out_the_owner(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="footfall.hub.auth")
    clock = Clock()
    limits = login_limits.LoginLimits(user_free_failures=4, slow_base_s=1, slow_max_s=30, window_s=300)
    app = make_app(db, limits, clock)
    with client_at(app, "192.0.2.20") as home:
        assert login(home, PASSWORD).status_code == 200  # the manager's usual address
    waits = []
    for i in range(40):  # a botnet: every guess from a fresh address
        with client_at(app, f"198.51.100.{i}") as bot:
            r = login(bot, WRONG)
            if r.status_code == 429:
                assert "user" in r.json()["detail"]
                waits.append(int(r.headers["retry-after"]))
        clock.t += 0.5
    assert waits and max(waits) <= 30  # spaced out, capped
    # The manager's known address is not slowed at all ...
    with client_at(app, "192.0.2.20") as home:
        assert login(home, PASSWORD).status_code == 200
    # ... and from a new address waits at most slow_max_s, then gets in.
    with client_at(app, "192.0.2.77") as travel:
        r = login(travel, PASSWORD)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) <= 30
            clock.t += int(r.headers["retry-after"])
            r = login(travel, PASSWORD)
        assert r.status_code == 200
    slowed = [r.getMessage() for r in caplog.records if "slowed down" in r.getMessage()]
    assert slowed == ["login slowed down for user 'manager': 4 failed logins from several addresses in 300 s"]


def test_state_for_random_names_and_addresses_is_pruned() -> None:
    clock = Clock()
    limiter = login_limits.LoginLimiter(clock=clock)
    for i in range(1000):
        limiter.finish(limiter.begin(f"name{i}", f"10.{i // 250}.{i % 250}.1"), False)
    clock.t += login_limits.FAILURE_WINDOW_S + 1
    for _ in range(limiter._PRUNE_EVERY):
        limiter.finish(limiter.begin("manager", "192.0.2.20"), True)
    assert len(limiter._pair) + len(limiter._address) + len(limiter._user) <= 3


# ------------------------------------------------------------ client address
def test_forwarded_for_only_from_trusted_proxies(db: Path) -> None:
    app = make_app(db, login_limits.LoginLimits(pair_failures=2), Clock(), trusted_proxies=("10.0.0.1",))
    with client_at(app, "10.0.0.1") as proxy:
        for _ in range(2):
            assert login(proxy, WRONG, headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 401
        assert login(proxy, PASSWORD, headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 429
        # A different client behind the same proxy is its own pair.
        assert login(proxy, PASSWORD, headers={"X-Forwarded-For": "203.0.113.6"}).status_code == 200
        # A client cannot prepend its way out: the proxy appended the address it saw last.
        r = login(proxy, PASSWORD, headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.5"})
        assert r.status_code == 429
    with client_at(app, "10.0.0.2") as untrusted:  # not a configured proxy: header ignored
        for _ in range(2):
            assert login(untrusted, WRONG, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 401
        assert login(untrusted, PASSWORD, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 429


def test_client_address() -> None:
    trusted = forwarded.parse_networks(["127.0.0.1", "10.0.0.0/8"])
    assert forwarded.client_address("192.0.2.1", ["203.0.113.5"], trusted) == "192.0.2.1"
    assert forwarded.client_address("127.0.0.1", ["203.0.113.5"], trusted) == "203.0.113.5"
    # Two trusted proxies in a row, a client-written entry on the left.
    assert forwarded.client_address("127.0.0.1", ["6.6.6.6, 203.0.113.5, 10.1.2.3"], trusted) == "203.0.113.5"
    assert forwarded.client_address("127.0.0.1", ["6.6.6.6", "203.0.113.5"], trusted) == "203.0.113.5"
    assert forwarded.client_address("127.0.0.1", ["garbage"], trusted) == "127.0.0.1"
    assert forwarded.client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert forwarded.client_address(None, [], trusted) == "unknown"
    # IPv6 is counted per /64; IPv4-mapped addresses as IPv4.
    assert (
        forwarded.client_address("2001:db8::1", [], ())
        == forwarded.client_address("2001:db8::ffff:2", [], ())
        == ("2001:db8::/64")
    )
    assert forwarded.client_address("::ffff:192.0.2.1", [], ()) == "192.0.2.1"
    with pytest.raises(ValueError, match="not-an-ip"):
        forwarded.parse_networks(["not-an-ip"])


def test_env_configures_trusted_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOOTFALL_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    assert WebSettings().trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    monkeypatch.delenv("FOOTFALL_TRUSTED_PROXIES")
    assert WebSettings().trusted_proxies == ()


# ------------------------------------------------------------ audit log
def test_lockouts_are_logged_without_passwords(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    limits = login_limits.LoginLimits(pair_failures=2, address_failures=3, user_free_failures=100)
    app = make_app(db, limits, Clock())
    caplog.set_level(logging.INFO, logger="footfall.hub")
    with client_at(app, "192.0.2.66") as c:
        for _ in range(4):
            login(c, WRONG)
        login(c, WRONG, user="assistant")
        login(c, WRONG, user="admin")
    with client_at(app, "192.0.2.20") as c:
        assert login(c, PASSWORD).status_code == 200
    text = "\n".join(r.getMessage() for r in caplog.records)
    locks = [r.getMessage() for r in caplog.records if "locked" in r.getMessage()]
    assert len([m for m in locks if "user and address" in m and "'manager'" in m]) == 1  # once, not per refusal
    assert any("locked for address" in m and "192.0.2.66" in m for m in locks)
    assert "login: user 'manager' from 192.0.2.20" in text
    assert WRONG not in text and PASSWORD not in text
