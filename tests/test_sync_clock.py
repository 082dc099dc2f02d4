"""A hub whose clock is wrong: it measures the offset from the centre's replies, corrects its
signing timestamps, says so in one WARNING line, and syncs; the real central service (uvicorn,
PostgreSQL) refuses only the first request. The hub's clock is injected through the sender's
``clock`` parameter; the centre runs on the real time.

Trust: a correction comes only from a server time signed with the hub's secret (bound to the
request's nonce) or from the ``Date`` of a verified https reply; a plain-http reply without a
server signature only earns a hint in the log.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from footfall.cloud_sync import outbox
from footfall.cloud_sync.central import auth, schema
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread, reset
from footfall.cloud_sync.sender import Sender
from footfall.cloud_sync.sync_cli import cycle, status
from tests import test_central_sync as shared
from tests.test_sync import SECRET, SITE, Central, _tls_files, config, enqueue, make_hub

pg_url = shared.pg_url
LINE = re.compile(r"^hub clock is (\d+) s (behind|ahead of) central; correcting; fix NTP$")


@pytest.fixture
def centre(pg_url: str) -> Iterator[tuple[Database, ServerThread, bytes]]:
    db = Database(pg_url)
    schema.init(db)
    reset(db)
    with db.connect() as c:
        secret = auth.add_hub(c, SITE).encode()
    with ServerThread(create_app(CentralConfig(), db=db)) as server:
        yield db, server, secret
    db.close()


class HubClock:
    """The hub's wall clock: the real time plus a skew the test sets (what a dead NTP does)."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def __call__(self) -> float:
        return time.time() + self.skew


def stale_refusals(url: str) -> int:
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith('footfall_central_batches_rejected_total{reason="stale_timestamp"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def corrections(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    found = [LINE.match(r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING]
    return [(int(m.group(1)), m.group(2)) for m in found if m]


def hub(tmp_path: Path, url: str, secret: bytes, clock: Callable[[], float]) -> tuple[object, object, Sender]:
    conn = make_hub(tmp_path / "hub.db", n_devices=6)
    cfg = config(tmp_path / "hub.db", url, once_max_attempts=3)
    return conn, cfg, Sender(conn, cfg, secret, sleep=lambda s: None, clock=clock)


@pytest.mark.parametrize("skew, side", [(-3600.0, "behind"), (7200.0, "ahead of")])
def test_skewed_hub_corrects_from_the_centres_signed_time_and_syncs(
    centre, tmp_path: Path, caplog: pytest.LogCaptureFixture, skew: float, side: str
) -> None:
    db, server, secret = centre
    clock = HubClock(skew)
    conn, cfg, sender = hub(tmp_path, server.url, secret, clock)
    with caplog.at_level(logging.INFO):
        # The full cycle: pushback (the first request: refused, 401 with a signed server time,
        # signed again at once), the batches and the fleet report, all accepted.
        assert cycle(conn, cfg, sender)
        assert stale_refusals(server.url) == 1
        (seconds, said), *more = corrections(caplog)
        assert not more and said == side and abs(seconds - abs(skew)) <= 5
        assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == 0
        assert abs(float(status(conn)["clock_offset_s"]) + skew) <= 5
        assert outbox.counters(conn).get("auth_failures", 0) == 0
        with db.connect() as c:
            assert c.scalar("SELECT COUNT(*) FROM applied_batches") > 0
            assert c.scalar("SELECT COUNT(*) FROM fleet_reports") == 1

        # The next cycle signs right from the start: no refusal, no new line.
        enqueue(conn, now=time.time())
        assert cycle(conn, cfg, sender)
        assert stale_refusals(server.url) == 1 and len(corrections(caplog)) == 1

        # NTP comes back: the stale correction costs one refusal, then it is removed.
        caplog.clear()
        clock.skew = 0.0
        assert cycle(conn, cfg, sender)
        assert stale_refusals(server.url) == 2 and sender.clock.offset == 0.0
        assert any("back within" in r.getMessage() for r in caplog.records)


def test_clock_beyond_the_bound_is_not_corrected(centre, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, server, secret = centre
    conn, cfg, sender = hub(tmp_path, server.url, secret, HubClock(-2 * 86400))
    enqueue(conn, now=time.time())
    with caplog.at_level(logging.WARNING):
        res = sender.drain(max_attempts=2)
    assert not res.ok and sender.clock.offset == 0.0
    assert outbox.counters(conn)["auth_failures"] == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "hub clock" in r.getMessage()]
    assert len(errors) == 1 and "behind central, more than the 86400 s" in errors[0] and "fix NTP" in errors[0]
    assert corrections(caplog) == []


def test_unauthenticated_reply_only_hints(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A plain-http peer that knows no server signature (its Date header is all it has): it could
    # be anyone, so the hub does not move its signing clock; it only says what it was told.
    peer = Central({SITE: SECRET}).start()
    try:
        conn, cfg, sender = hub(tmp_path, peer.url, SECRET, HubClock(-3600))
        enqueue(conn)
        with caplog.at_level(logging.WARNING):
            assert not sender.drain(max_attempts=2).ok
        assert sender.clock.offset == 0.0 and peer.auth_errors == ["stale_timestamp"] * 2
        hints = [r.getMessage() for r in caplog.records if "unauthenticated reply" in r.getMessage()]
        assert len(hints) == 1 and re.search(r"hub clock is 3(599|600|601) s behind central", hints[0])
        assert hints[0].endswith("fix NTP")
        assert corrections(caplog) == []
    finally:
        peer.stop()


def test_date_of_a_verified_https_reply_is_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca_pem, cert_pem, key_pem = _tls_files(tmp_path)
    peer = Central({SITE: SECRET}).start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_pem, key_pem)
    assert peer.server is not None
    peer.server.socket = ctx.wrap_socket(peer.server.socket, server_side=True)
    try:
        conn = make_hub(tmp_path / "hub.db", n_devices=3)
        cfg = config(tmp_path / "hub.db", f"https://127.0.0.1:{peer.port}", ca_file=str(ca_pem))
        sender = Sender(conn, cfg, SECRET, sleep=lambda s: None, clock=HubClock(-3600))
        enqueue(conn)
        with caplog.at_level(logging.WARNING):
            assert sender.drain(max_attempts=2).ok
        assert peer.auth_errors == ["stale_timestamp"]
        assert [(side, abs(n - 3600) <= 5) for n, side in corrections(caplog)] == [("behind", True)]
    finally:
        peer.stop()
