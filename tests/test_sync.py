"""Hub side of the central sync: outbox, sender (backoff, exactly once, crash resume), pushback.

A small real HTTP server (http.server in a thread) plays the centre: it verifies every request
with ``signing.verify`` and a nonce cache, applies each batch id once, and can be switched to
answer 500 / 400 / 413, to be slow, or to be down (connection refused).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zoneinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
import pytest

from footfall import schema
from footfall.cloud_sync import changes, outbox, pushback, sensor_optouts, signing
from footfall.cloud_sync.config import ConfigError, SyncConfig, from_dict
from footfall.cloud_sync.sender import Sender
from footfall.hub import store
from footfall.hub.o2o import privacy, scenarios
from footfall.tools.broker import free_port

SITE = "store-042"
SECRET = b"test-secret-of-store-042"
TZ = "Europe/Berlin"
DAY0 = dt.date(2026, 11, 16)
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC).timestamp()


# -- a centre that verifies, records and misbehaves on demand -------------------------------


class Central:
    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.secrets = secrets
        self.nonces = signing.NonceCache()
        self.mode = "ok"  # ok | 500 | 400 | 413 | slow | hang
        self.fail_next = 0  # answer `mode` this many times, then ok (0 = while mode is set)
        self.slow_s = 0.0
        self.max_records = 10**9  # 413 above this
        self.applied: dict[str, list[dict[str, Any]]] = {}  # batch id -> records
        self.record_applications: dict[tuple[str, str], int] = {}  # (kind, key) -> times applied
        self.seqs: list[int] = []
        self.log: list[tuple[str, int, str | None]] = []  # (method, status, batch id)
        self.auth_errors: list[str] = []
        self.pushback: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Central:
        central = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: dict[str, Any], batch_id: str | None = None) -> None:
                with central.lock:
                    central.log.append((self.command, code, batch_id))
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _auth(self, body: bytes) -> bool:
                hub = signing.hub_of(self.headers) or ""
                try:
                    if hub not in central.secrets:
                        raise signing.SignatureError("unknown_hub")
                    signing.verify(central.secrets[hub], self.headers, self.command, self.path, body)
                    central.nonces.check_and_add(hub, self.headers[signing.NONCE_HEADER])
                except signing.SignatureError as exc:
                    central.auth_errors.append(exc.reason)
                    self._answer(401, {"error": exc.reason})
                    return False
                return True

            def _misbehave(self) -> bool:
                mode = central.mode
                if mode in ("500", "400") and central.fail_next >= 0:
                    if central.fail_next > 0:
                        central.fail_next -= 1
                        if central.fail_next == 0:
                            central.mode = "ok"
                    self._answer(int(mode), {"error": f"told to fail with {mode}"})
                    return True
                return False

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._auth(raw) or self._misbehave():
                    return
                batch = json.loads(gzip.decompress(raw))
                batch_id = batch["batch_id"]
                assert self.headers["Idempotency-Key"] == batch_id
                if len(batch["records"]) > central.max_records:
                    self._answer(413, {"error": "too large"}, batch_id)
                    return
                with central.lock:
                    duplicate = batch_id in central.applied
                    if not duplicate:
                        central.applied[batch_id] = batch["records"]
                        central.seqs.append(batch["seq"])
                        for r in batch["records"]:
                            k = (r["kind"], r["key"])
                            central.record_applications[k] = central.record_applications.get(k, 0) + 1
                if central.mode == "slow":
                    time.sleep(central.slow_s)
                if central.mode == "hang":
                    time.sleep(60)
                self._answer(
                    200, {"accepted": len(batch["records"]), "duplicate": duplicate, "seq": batch["seq"]}, batch_id
                )

            def do_GET(self) -> None:  # noqa: N802
                if not self._auth(b""):
                    return
                since = int(parse_qs(urlsplit(self.path).query).get("since", ["0"])[0])
                items = central.pushback[since:]
                self._answer(200, {"cursor": len(central.pushback), "items": items})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def records(self) -> list[dict[str, Any]]:
        return [r for rs in self.applied.values() for r in rs]


@pytest.fixture
def central() -> Any:
    c = Central({SITE: SECRET}).start()
    yield c
    c.stop()


# -- a hub database with real tables --------------------------------------------------------


def _visit(conn: Any, key: str, start: float, dwell: float, cls: str = "visitor", sensor: str = "s1") -> None:
    local = dt.datetime.fromtimestamp(start, dt.UTC).astimezone(zoneinfo.ZoneInfo(TZ))
    conn.execute(
        """INSERT INTO visits (site, device, device_key, randomized, partner_hash, first_seen, last_seen, dwell_s,
                               inside_s, class, long_stay, best_sensor, sensors, n_sensor_visits, day, hour)
           VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, 0, ?, ?, 1, ?, ?)""",
        (SITE, key, key, phone_hash(key), start, start + dwell, dwell, dwell, cls, sensor, f'["{sensor}"]',
         local.date().isoformat(), local.hour),
    )  # fmt: skip


def _refresh_devices(conn: Any) -> None:
    conn.execute("DELETE FROM devices")
    conn.execute(
        """INSERT INTO devices (device_key, randomized, partner_hash, first_seen, last_seen, visit_count, total_dwell_s)
           SELECT device_key, 0, max(partner_hash), min(first_seen), max(last_seen), count(*), total(dwell_s)
           FROM visits GROUP BY device_key"""
    )


def phone_hash(key: str) -> str:
    return hashlib.md5(key.encode()).hexdigest()


def device_id(i: int) -> str:
    return f"{i:064x}"


def make_hub(path: Path, n_devices: int = 40, days: int = 4) -> Any:
    conn = store.connect(path)
    with conn:
        for i in range(n_devices):
            for d in range(days):
                if (i + d) % 2 == 0:
                    start = dt.datetime.combine(DAY0 + dt.timedelta(days=d), dt.time(9 + i % 8)).timestamp()
                    _visit(conn, device_id(i), start, 60.0 * (1 + i % 7), "visitor" if i % 3 else "passerby")
        _refresh_devices(conn)
        conn.execute("INSERT INTO sensors (site, sensor, state) VALUES (?, 's1', 'online'), (?, 's2', 'online')",
                     (SITE, SITE))  # fmt: skip
        for s in ("s1", "s2"):
            for m in range(0, 24 * 60, 60):
                ts = dt.datetime.combine(DAY0, dt.time(), tzinfo=dt.UTC).timestamp() + m * 60
                conn.execute("INSERT INTO presence VALUES (?, ?, ?, 3, 1)", (SITE, s, ts))
        conn.execute(
            "INSERT INTO segments (id, name, kind, definition, created, updated) VALUES "
            "(1, 'cluster: lunch-time regulars', 'cluster', '{}', 0, 0), (2, 'loyal', 'rule', '{}', 0, 0)"
        )
        conn.executemany(
            "INSERT INTO segment_members VALUES (?, ?, ?)",
            [(1 if i % 2 else 2, device_id(i), 1000.0 + i) for i in range(n_devices)],
        )
    return conn


def config(db: Path, url: str, **kw: Any) -> SyncConfig:
    base = dict(site=SITE, db=str(db), timezone=TZ, url=url, allow_http=True, backoff_base_s=0.02,
                backoff_cap_s=0.2, connect_timeout_s=5.0, read_timeout_s=10.0, sensors=["s1", "s2"])  # fmt: skip
    return SyncConfig(**(base | kw))


def enqueue(conn: Any, now: float = NOW, **kw: Any) -> changes.EnqueueResult:
    # Visit events are tested on their own; the other tests count the snapshot kinds.
    return changes.enqueue_changes(conn, SITE, tz=TZ, now=now, **({"visit_events": False} | kw))


def outbox_keys(conn: Any) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in conn.execute("SELECT kind, key FROM sync_outbox")}


# -- outbox -----------------------------------------------------------------------------------


def test_outbox_snapshots_profiles_aggregates_and_is_idempotent(tmp_path: Path) -> None:
    conn = make_hub(tmp_path / "hub.db")
    first = enqueue(conn)
    assert first.profiles == 40 and first.segment_changes == 40
    assert first.daily_aggregates == 4  # four closed local days
    rows = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
    assert rows == 85  # + one store health record
    again = enqueue(conn)
    assert again.total == 0
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == rows

    prof = json.loads(conn.execute("SELECT data FROM sync_outbox WHERE key = ?", (device_id(1),)).fetchone()[0])
    assert prof["visits"] == 2 and prof["dwell_total_s"] == 240.0 and prof["dwell_mean_s"] == 120.0
    assert prof["dwell_median_s"] == 120.0
    assert prof["cluster"] == "lunch-time regulars"
    assert prof["segments"][0]["name"] == "cluster: lunch-time regulars"
    assert prof["partner_hash"] is None  # no consent recorded: no phone hash on the wire

    # A change (a late visit that does not move last_seen) re-snapshots one profile, collapsed
    # into its pending row: same row id, new data.
    row_id = conn.execute("SELECT id FROM sync_outbox WHERE key = ?", (device_id(1),)).fetchone()[0]
    with conn:
        conn.execute("UPDATE devices SET visit_count = visit_count + 1 WHERE device_key = ?", (device_id(1),))
        outbox.record_consent(conn, device_id(2), granted=NOW)
    res = enqueue(conn)
    assert res.profiles == 2 and res.total == 2
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == rows
    data, rid = conn.execute("SELECT data, id FROM sync_outbox WHERE key = ?", (device_id(1),)).fetchone()
    assert rid == row_id and json.loads(data)["visits"] == 3
    prof2 = json.loads(conn.execute("SELECT data FROM sync_outbox WHERE key = ?", (device_id(2),)).fetchone()[0])
    assert prof2["partner_hash"] == phone_hash(device_id(2)) and prof2["consent_granted"] == NOW

    agg = json.loads(
        conn.execute("SELECT data FROM sync_outbox WHERE kind = 'daily_aggregate' ORDER BY key").fetchone()[0]
    )
    assert agg["day"] == DAY0.isoformat()
    assert agg["visitors"] + agg["passersby"] == 20
    assert 0 < agg["capture_rate"] < 1
    assert agg["sensor_health"]["sensors"]["s1"]["presence_reports"] > 0


def test_staff_and_fixed_devices_are_not_synced(tmp_path: Path) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=6)
    with conn:
        conn.execute("UPDATE devices SET excluded = 1, excluded_reason = 'staff' WHERE device_key = ?", (device_id(3),))
    assert enqueue(conn).profiles == 5
    assert ("profile", device_id(3)) not in outbox_keys(conn)


def test_visit_coupon_and_redemption_events(tmp_path: Path) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=6)
    visitor_visits = conn.execute("SELECT count(*) FROM visits WHERE class = 'visitor'").fetchone()[0]
    last_start = conn.execute("SELECT max(first_seen) FROM visits").fetchone()[0]
    # Visits still open to merging (the newest, "now" just after it) wait for a later run.
    early = enqueue(conn, now=last_start + 60, visit_events=True)
    assert 0 < early.events < visitor_visits
    res = enqueue(conn, visit_events=True)
    assert early.events + res.events == visitor_visits
    assert enqueue(conn, visit_events=True).events == 0  # cursor: nothing twice
    ev = json.loads(conn.execute("SELECT data FROM sync_outbox WHERE kind = 'event' ORDER BY id").fetchone()[0])
    assert ev["type"] == "visit" and ev["dwell_s"] > 0 and ev["zone"] == "s1"
    # O2O coupons and redemptions (the O2O module's tables) become profile events too.
    with conn:
        conn.execute(
            """INSERT INTO o2o_coupons (code, scenario_id, device_key, kind, value, valid_from, valid_until, issued_at)
               VALUES ('C-1', 1, ?, 'percent', 10, 0, 9e9, ?)""",
            (device_id(1), NOW),
        )
        conn.execute(
            "INSERT INTO o2o_redemptions (code, store, amount, discount, at) VALUES ('C-1', ?, 50, 5, ?)", (SITE, NOW)
        )
    assert enqueue(conn, visit_events=True).events == 2
    kinds = [json.loads(r[0])["type"] for r in conn.execute("SELECT data FROM sync_outbox WHERE key LIKE 'coupon:%'"
                                                            " OR key LIKE 'redemption:%' ORDER BY id")]  # fmt: skip
    assert kinds == ["coupon_issued", "redemption"]
    assert enqueue(conn, visit_events=True).events == 0


def test_segment_changes_enter_and_exit(tmp_path: Path) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=4)
    enqueue(conn)
    with conn:
        conn.execute("DELETE FROM sync_outbox")
        conn.execute("DELETE FROM segment_members WHERE device_key = ?", (device_id(0),))
        conn.execute("INSERT INTO segment_members VALUES (1, ?, 5000.0)", (device_id(0),))
    enqueue(conn, now=NOW + 60)
    changes = [
        json.loads(r[0]) for r in conn.execute("SELECT data FROM sync_outbox WHERE kind = 'segment_change' ORDER BY id")
    ]
    assert [(c["segment"], c["change"]) for c in changes] == [
        ("loyal", "exit"),
        ("cluster: lunch-time regulars", "enter"),
    ]
    assert changes[0]["ts"] == NOW + 60 and changes[1]["ts"] == 5000.0
    assert enqueue(conn, now=NOW + 120).segment_changes == 0


def test_outbox_bound_drops_oldest_low_value_rows_only(tmp_path: Path) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=10)
    with conn:
        for i in range(30):
            outbox.enqueue(conn, "event", f"coupon-{i}", {"n": i}, now=NOW)
    res = enqueue(conn, max_rows=26, droppable=["event", "segment_change"])
    kinds = outbox.pending_count(conn)
    # 10 profiles + 4 aggregates + 1 health are kept; events and segment changes go oldest first.
    assert kinds["profile"] == 10 and kinds["daily_aggregate"] == 4 and kinds["health"] == 1
    assert sum(kinds.values()) == 26
    assert res.dropped == {"event": 29}
    assert outbox.counters(conn)["dropped_event"] == 29
    assert conn.execute("SELECT key FROM sync_outbox WHERE kind = 'event'").fetchall()[0][0] == "coupon-29"
    # Only profiles left to drop: they are kept and the overflow is counted, not hidden.
    enqueue(conn, max_rows=5, droppable=["event", "segment_change"])
    assert outbox.pending_count(conn)["profile"] == 10
    assert outbox.counters(conn)["outbox_over_bound"] >= 1


# -- sender -----------------------------------------------------------------------------------


def _all_record_keys(conn: Any) -> set[tuple[str, str]]:
    return outbox_keys(conn)


def test_sender_backs_off_while_down_then_delivers_exactly_once(tmp_path: Path, central: Central) -> None:
    conn = make_hub(tmp_path / "hub.db")
    enqueue(conn)
    expected = _all_record_keys(conn)
    cfg = config(tmp_path / "hub.db", central.url, batch_records=10)
    delays: list[float] = []
    sender = Sender(conn, cfg, SECRET, sleep=delays.append)

    central.stop()  # connection refused
    res = sender.drain(max_attempts=6)
    assert not res.ok and res.failures == 6 and res.records == 0
    # Full jitter: every delay within [0, min(cap, base * 2**n)].
    ceilings = [min(0.2, 0.02 * 2**n) for n in range(5)]
    assert all(0 <= d <= c for d, c in zip(res.delays, ceilings, strict=True))
    inflight = conn.execute("SELECT batch_id, attempts FROM sync_batches").fetchall()
    assert len(inflight) == 1 and inflight[0][1] == 6  # one batch formed, retried as the same id

    central.start()
    central.mode, central.fail_next = "500", 3  # then three server errors
    res = sender.drain(max_attempts=10)
    assert res.ok and res.failures == 3
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == 0

    delivered = central.records()
    assert {(r["kind"], r["key"]) for r in delivered} == expected
    assert len(delivered) == len(expected)  # exactly once
    assert set(central.record_applications.values()) == {1}
    assert central.seqs == list(range(1, len(central.applied) + 1))
    # The batch formed while the centre was down went out under the id it was formed with.
    assert inflight[0][0] in central.applied
    stats = outbox.counters(conn)
    assert stats["sent_records"] == len(expected) and stats["send_failures"] == 9


def test_lost_answer_is_resent_with_same_id_and_applied_once(tmp_path: Path, central: Central) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=10)
    enqueue(conn)
    expected = _all_record_keys(conn)
    cfg = config(tmp_path / "hub.db", central.url, batch_records=5, read_timeout_s=0.3)
    sender = Sender(conn, cfg, SECRET, sleep=lambda s: None)
    central.mode, central.slow_s = "slow", 0.6  # applied, but the answer comes after the timeout
    out = sender.send_once()
    assert out.status == "retry" and "Timeout" in (out.error or "")
    deadline = time.monotonic() + 10  # the centre applied it (however loaded this machine is)
    while out.batch_id not in central.applied and time.monotonic() < deadline:
        time.sleep(0.02)
    central.mode = "ok"
    assert sender.drain(max_attempts=3).ok
    assert sum(central.record_applications.values()) == len(expected)
    assert outbox.counters(conn)["duplicate_batches"] == 1


def test_malformed_batch_is_parked_and_sending_goes_on(tmp_path: Path, central: Central) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=10)
    enqueue(conn)
    total = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
    expected = _all_record_keys(conn)
    cfg = config(tmp_path / "hub.db", central.url, batch_records=8)
    central.mode, central.fail_next = "400", 1
    res = Sender(conn, cfg, SECRET, sleep=lambda s: None).drain(max_attempts=3)
    assert res.ok and res.parked == 8
    parked = conn.execute("SELECT count(*), min(park_reason) FROM sync_outbox WHERE parked IS NOT NULL").fetchone()
    assert parked[0] == 8 and "400" in parked[1]
    assert len(central.records()) == total - 8
    assert outbox.counters(conn)["parked_batches"] == 1
    # Once the centre is fixed, parked rows can be queued again.
    with conn:
        assert outbox.unpark(conn) == 8
    assert Sender(conn, cfg, SECRET, sleep=lambda s: None).drain(max_attempts=3).ok
    assert {(r["kind"], r["key"]) for r in central.records()} == expected


def test_too_large_batch_is_split(tmp_path: Path, central: Central) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=10)
    enqueue(conn)
    total = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
    central.max_records = 3
    cfg = config(tmp_path / "hub.db", central.url, batch_records=16)
    assert Sender(conn, cfg, SECRET, sleep=lambda s: None).drain(max_attempts=3).ok
    assert len(central.records()) == total and set(central.record_applications.values()) == {1}
    assert all(len(rs) <= 3 for rs in central.applied.values())


def test_batch_bytes_bound_and_gzip(tmp_path: Path, central: Central) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=30)
    enqueue(conn)
    cfg = config(tmp_path / "hub.db", central.url, batch_records=1000, batch_bytes=4096)
    sender = Sender(conn, cfg, SECRET, sleep=lambda s: None)
    batch = sender.form_batch()
    assert batch is not None and 1 < batch.records < 30
    text = gzip.decompress(batch.body)
    assert len(text) <= 4096 and len(batch.body) < len(text)
    assert json.loads(text)["batch_id"] == batch.batch_id
    assert sender.drain(max_attempts=2).ok


def test_wrong_secret_is_rejected_and_nothing_acked(tmp_path: Path, central: Central) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=3)
    enqueue(conn)
    n = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
    cfg = config(tmp_path / "hub.db", central.url)
    res = Sender(conn, cfg, b"not the secret", sleep=lambda s: None).drain(max_attempts=2)
    assert not res.ok and central.auth_errors == ["bad_signature", "bad_signature"]
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == n
    assert outbox.counters(conn)["auth_failures"] == 2


SYNC_TOML = """
[sync]
site = "{site}"
db = "{db}"
timezone = "{tz}"
url = "{url}"
allow_http = true
secret_file = "{secret}"
batch_records = 7
backoff_base_s = 0.05
backoff_cap_s = 0.2
read_timeout_s = 30
once_max_attempts = 3
visit_events = false
"""


def test_resume_after_sigkill_mid_send(tmp_path: Path, central: Central) -> None:
    db = tmp_path / "hub.db"
    conn = make_hub(db, n_devices=20)
    enqueue(conn)
    expected = _all_record_keys(conn)
    conn.close()
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    cfg_file = tmp_path / "sync.toml"
    cfg_file.write_text(SYNC_TOML.format(site=SITE, db=db, tz=TZ, url=central.url, secret=tmp_path / "secret"))
    cmd = [sys.executable, "-m", "footfall.cloud_sync.sync_cli", "sync", "once", "--no-pushback", "--config",
           str(cfg_file)]  # fmt: skip
    env = dict(os.environ, FOOTFALL_SYNC_AGGREGATE_DAYS="3")
    central.mode = "hang"  # the first batch is applied, its answer never comes
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not central.applied and time.monotonic() < deadline:
        time.sleep(0.05)
    assert central.applied, proc.stdout.read() if proc.poll() is not None else "no batch arrived"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_batch = next(iter(central.applied))

    conn = store.connect(db)
    assert conn.execute("SELECT batch_id FROM sync_batches").fetchone()[0] == killed_batch
    assert _all_record_keys(conn) == expected  # nothing lost, nothing acked
    conn.close()

    central.mode = "ok"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    conn = store.connect(db)
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == 0
    # Exactly once: every record applied one time; the killed batch was resent as the same id.
    assert {(r["kind"], r["key"]) for r in central.records()} == expected
    assert set(central.record_applications.values()) == {1}
    posts = [c for c in central.log if c[0] == "POST" and c[2] == killed_batch]
    assert len(posts) == 1  # the hung first attempt never answered; the resend did (duplicate)
    assert outbox.counters(conn)["duplicate_batches"] == 1


# -- pushback ---------------------------------------------------------------------------------


def _subscriber(broker: Any, topic: str) -> tuple[Any, dict[str, bytes], threading.Event]:
    got: dict[str, bytes] = {}
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sensor-view")

    def on_message(c: Any, u: Any, msg: Any) -> None:
        if msg.retain:
            got[msg.topic] = bytes(msg.payload)

    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client, got, ready


def test_pushback_optout_consent_definitions_and_retained_config(tmp_path: Path, central: Central, broker: Any) -> None:
    db = tmp_path / "hub.db"
    conn = make_hub(db, n_devices=10)
    enqueue(conn)
    opted, withdrawn = device_id(1), device_id(2)
    with conn:
        outbox.record_consent(conn, withdrawn, granted=NOW)
    enqueue(conn)
    cfg = config(db, central.url, batch_records=5, mqtt_host=broker.host, mqtt_port=broker.port)
    # A formed, unacknowledged batch that holds the opted-out device must not go out as it is.
    sender = Sender(conn, cfg, SECRET, sleep=lambda s: None)
    first = sender.form_batch()
    assert first is not None
    assert opted in {r[0] for r in conn.execute("SELECT key FROM sync_outbox WHERE batch_id = ?", (first.batch_id,))}

    # Sensor s1 already holds a retained config with other settings; they must survive.
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-hub-ui")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    pub.publish(f"footfall/{SITE}/s1/config", json.dumps({"v": 1, "type": "config", "visits": {"gap_s": 45}}),
                qos=1, retain=True).wait_for_publish(5)  # fmt: skip
    pub.disconnect()
    pub.loop_stop()

    central.pushback = [
        {"kind": "optout", "device": opted, "ts": NOW},
        {"kind": "consent_withdrawn", "device": withdrawn, "ts": NOW + 1},
        {"kind": "segment_definition", "id": "multi-store", "definition": {"stores_30d": {">=": 2}}},
        {"kind": "scenario_settings", "id": 7, "settings": {"enabled": False}},
        {"kind": "optout", "device": "not-a-hash; DROP TABLE"},
        {"kind": "mystery"},
    ]
    res = pushback.pull(conn, cfg, SECRET, publisher=sensor_optouts.ConfigPublisher(cfg, settle_s=0.3))
    a = res.applied
    # The segment definition is not in the hub's rule syntax: refused (and reported), not lost.
    assert (a.optouts, a.consents_withdrawn, a.segment_definitions, a.scenario_settings, a.rejected) == (1, 1, 0, 1, 2)
    assert a.definitions_refused == 1
    assert res.cursor == "6" and outbox.get_state(conn, "pushback_cursor") == "6"
    assert res.sensors_notified == 2

    # Opt-out: the device's profile data is gone from the hub and from the outbox.
    assert conn.execute("SELECT device FROM optouts").fetchall()[0][0] == opted
    assert conn.execute("SELECT count(*) FROM devices WHERE device_key = ?", (opted,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM segment_members WHERE device_key = ?", (opted,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sync_batches").fetchone()[0] == 0  # the batch was released
    assert not [k for k in _all_record_keys(conn) if opted in k[1]]
    # Consent withdrawn: phone hashes gone everywhere, the fact and date kept.
    assert conn.execute("SELECT partner_hash FROM devices WHERE device_key = ?", (withdrawn,)).fetchone()[0] is None
    assert conn.execute("SELECT count(*) FROM visits WHERE partner_hash IS NOT NULL AND device = ?",
                        (withdrawn,)).fetchone()[0] == 0  # fmt: skip
    assert conn.execute("SELECT granted, withdrawn FROM consents WHERE device = ?", (withdrawn,)).fetchone()[:] == (
        None,
        NOW + 1,
    )
    prof = json.loads(conn.execute("SELECT data FROM sync_outbox WHERE key = ?", (withdrawn,)).fetchone()[0])
    assert prof["partner_hash"] is None
    # ... and O2O campaigns will not contact either of them.
    # (keyed at rest, hub/o2o/privacy.py)
    stop = {r[0] for r in conn.execute("SELECT subject FROM o2o_stoplist")}
    subjects = privacy.attach(conn)
    assert stop == {subjects.key(phone_hash(opted)), subjects.key(phone_hash(withdrawn))}
    definition, status, error = conn.execute("SELECT definition, status, error FROM central_segments").fetchone()
    assert json.loads(definition) == {"stores_30d": {">=": 2}} and status == "refused" and "stores_30d" in error
    assert conn.execute("SELECT id, status FROM central_scenarios").fetchone()[:] == ("7", "applied")
    assert not scenarios.get(conn, "7").enabled

    # The sensors see the retained config with the opt-out list (a subscriber arriving later).
    sub, got, ready = _subscriber(broker, f"footfall/{SITE}/+/config")
    try:
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.disconnect()
        sub.loop_stop()
    s1 = schema.validate(got[f"footfall/{SITE}/s1/config"], "config")
    s2 = schema.validate(got[f"footfall/{SITE}/s2/config"], "config")
    assert s1["optout"] == [opted] and s2["optout"] == [opted]
    assert s1["visits"] == {"gap_s": 45}

    # Nothing of the opted-out device is ever enqueued again; sending delivers the rest.
    with conn:
        conn.execute(
            "INSERT INTO devices (device_key, randomized, first_seen, last_seen, visit_count, total_dwell_s) "
            "VALUES (?, 0, 1, 2, 1, 5)",
            (opted,),
        )
    enqueue(conn, now=NOW + 100)
    assert not [k for k in _all_record_keys(conn) if opted in k[1]]
    assert sender.drain(max_attempts=3).ok
    assert first.batch_id not in central.applied
    assert not [r for r in central.records() if opted in (r["key"], r["data"].get("device"))]
    sent_withdrawn = [r for r in central.records() if r["kind"] == "profile" and r["key"] == withdrawn]
    assert sent_withdrawn and all(r["data"]["partner_hash"] is None for r in sent_withdrawn)

    # A second pull: nothing new, the sensors are not re-published (digest unchanged).
    again = pushback.pull(conn, cfg, SECRET, publisher=sensor_optouts.ConfigPublisher(cfg, settle_s=0.1))
    assert again.applied.optouts == 0 and again.sensors_notified == 0


def test_optout_list_over_payload_limit_goes_compact_then_keeps_newest() -> None:
    from footfall.edge_agent.identity import Identifier

    def rid(i: int) -> str:  # an agent's device id: 32 random-looking hex digits
        return hashlib.md5(str(i).encode()).hexdigest()

    base = {"v": 1, "type": "config", "visits": {"gap_s": 45}, "optout_prefixes": "stale"}
    few = [rid(i) for i in range(100)]
    payload, left_out = sensor_optouts.config_payload(base, few)
    msg = schema.validate(payload, "config")
    assert (msg["optout"], left_out, "optout_prefixes" in msg) == (few, 0, False)

    # 2,000 full ids do not fit in 64 KB; as 8-byte prefixes they all do.
    many = [rid(i) for i in range(2000)]
    payload, left_out = sensor_optouts.config_payload(base, many)
    msg = schema.validate(payload, "config")
    assert len(payload) <= schema.MAX_PAYLOAD_BYTES and left_out == 0 and msg["optout"] == []
    assert schema.unpack_optout_prefixes(msg["optout_prefixes"]) == [bytes.fromhex(d[:16]) for d in many]
    assert msg["visits"] == {"gap_s": 45}

    # Beyond ~6,000 the newest are kept and the rest counted.
    lots = [rid(i) for i in range(7000)]
    payload, left_out = sensor_optouts.config_payload(base, lots)
    kept = schema.unpack_optout_prefixes(schema.validate(payload, "config")["optout_prefixes"])
    assert len(payload) <= schema.MAX_PAYLOAD_BYTES and left_out > 0 and len(kept) > 6000
    assert kept == [bytes.fromhex(d[:16]) for d in lots[: len(kept)]] and len(kept) + left_out == 7000
    assert len(set(kept)) == len(kept)

    # An agent given the compact list drops exactly those devices at capture.
    ident = Identifier(b"k" * 32)
    macs = [bytes([0, 0x11, 0x22, 0x33, i // 256, i % 256]) for i in range(3000)]
    opted = [ident.device_id(m) for m in macs[:2500]]
    payload, _ = sensor_optouts.config_payload(None, opted)
    ident.set_optout([], schema.unpack_optout_prefixes(schema.validate(payload, "config")["optout_prefixes"]))
    assert [ident.identify(m) is None for m in macs] == [True] * 2500 + [False] * 500


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http"):
        SyncConfig(url="http://central.example")
    with pytest.raises(ConfigError, match="unknown"):
        from_dict({"sync": {"nonsense": 1}}, env={})
    cfg = from_dict(
        {"sync": {"url": "https://c.example/", "batch_records": 5}}, env={"FOOTFALL_SYNC_BATCH_RECORDS": "9"}
    )
    assert cfg.batch_records == 9 and cfg.endpoint("/api/v1/sync/batches") == "https://c.example/api/v1/sync/batches"
    assert cfg.tls_verify_arg() is True
    assert from_dict({"ca_file": "/etc/ca.pem"}, env={}).tls_verify_arg() == "/etc/ca.pem"
    with pytest.raises(ConfigError, match="secret"):
        cfg.secret(env={})
    assert cfg.secret(env={"FOOTFALL_SYNC_SECRET": "abc"}) == b"abc"
    hub_toml = tmp_path / "hub.toml"
    hub_toml.write_text('site = "store-7"\ndb = "/tmp/x.db"\ntimezone = "Europe/Berlin"\n[mqtt]\nport = 1999\n')
    cfg = from_dict({"sync": {"hub_config": str(hub_toml)}}, env={})
    assert (cfg.site, cfg.db, cfg.timezone, cfg.mqtt_port) == ("store-7", "/tmp/x.db", "Europe/Berlin", 1999)


def test_200_without_the_centres_answer_is_not_an_ack(tmp_path: Path) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=2)
    enqueue(conn)
    n = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]

    class Portal(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html>welcome to the guest wifi</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = config(tmp_path / "hub.db", f"http://127.0.0.1:{server.server_address[1]}")
        res = Sender(conn, cfg, SECRET, sleep=lambda s: None).drain(max_attempts=2)
    finally:
        server.shutdown()
        server.server_close()
    assert not res.ok and conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == n


def test_cli_once_and_status(tmp_path: Path, central: Central, capsys: Any) -> None:
    import argparse

    from footfall.cloud_sync import sync_cli

    db = tmp_path / "hub.db"
    make_hub(db, n_devices=5).close()
    (tmp_path / "secret").write_bytes(SECRET)
    cfg_file = tmp_path / "sync.toml"
    cfg_file.write_text(SYNC_TOML.format(site=SITE, db=db, tz=TZ, url=central.url, secret=tmp_path / "secret"))
    # register_sync plugs into any argparse sub-parsers, as footfall.cli does with each part.
    parser = argparse.ArgumentParser(prog="footfall")
    sync_cli.register_sync(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sync", "once", "--config", str(cfg_file)])
    assert args.func(args) == 0
    assert sync_cli.main(["sync", "status", "--json", "--config", str(cfg_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pending"] == {} and info["counters"]["sent_records"] == len(central.records()) > 0
    assert info["pushback_cursor"] == "0" and info["site"] == SITE
    central.stop()
    assert sync_cli.main(["sync", "once", "--config", str(cfg_file)]) == 1  # centre down: not delivered
    assert sync_cli.main(["sync", "status", "--config", str(tmp_path / "missing.toml")]) == 2


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    end = start + dt.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("footfall test CA")).issuer_name(name("footfall test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_pem, cert_pem, key_pem = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem, cert_pem, key_pem


def test_tls_verified_against_the_configured_ca(tmp_path: Path) -> None:
    import ssl

    ca_pem, cert_pem, key_pem = _tls_files(tmp_path)
    central = Central({SITE: SECRET}).start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_pem, key_pem)
    assert central.server is not None
    central.server.socket = ctx.wrap_socket(central.server.socket, server_side=True)
    try:
        conn = make_hub(tmp_path / "hub.db", n_devices=3)
        enqueue(conn)
        url = f"https://127.0.0.1:{central.port}"
        # The system trust store does not know the centre's private CA: refused, nothing acked.
        res = Sender(conn, config(tmp_path / "hub.db", url), SECRET, sleep=lambda s: None).drain(max_attempts=1)
        assert not res.ok and "SSL" in (outbox.get_state(conn, "last_error") or "")
        assert not central.applied
        cfg = config(tmp_path / "hub.db", url, ca_file=str(ca_pem))
        assert Sender(conn, cfg, SECRET, sleep=lambda s: None).drain(max_attempts=2).ok
        assert len(central.records()) == 3 + 3 + 1 + 4  # profiles, segment changes, health, days
    finally:
        central.stop()


def test_run_loop_delivers_new_changes_and_stops_on_sigterm(tmp_path: Path, central: Central) -> None:
    db = tmp_path / "hub.db"
    make_hub(db, n_devices=4).close()
    (tmp_path / "secret").write_bytes(SECRET)
    cfg_file = tmp_path / "sync.toml"
    text = SYNC_TOML.format(site=SITE, db=db, tz=TZ, url=central.url, secret=tmp_path / "secret")
    cfg_file.write_text(text + "interval_s = 0.3\n")
    cmd = [sys.executable, "-m", "footfall.cloud_sync.sync_cli", "sync", "run", "--no-pushback", "--config",
           str(cfg_file)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def wait_for(pred: Any) -> bool:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if pred():
                    return True
                time.sleep(0.05)
            return False

        assert wait_for(lambda: any(r["kind"] == "profile" for r in central.records()))
        conn = store.connect(db)
        with conn:  # a new visit while the service runs: the next cycle sends the new profile
            conn.execute("UPDATE devices SET visit_count = 99 WHERE device_key = ?", (device_id(0),))
        conn.close()
        assert wait_for(lambda: any(r["kind"] == "profile" and r["data"]["visits"] == 99 for r in central.records()))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
