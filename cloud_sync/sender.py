"""Send the outbox to the central service: signed, gzipped batches, exactly once per batch id.

A batch is *formed* in one transaction: its rows get its ``batch_id`` (frozen: later versions of
the same record queue behind them) and its gzipped body, ``seq`` and id are stored in
``sync_batches``. Only then is it sent. So a sender killed at any point resends exactly the same
bytes under the same ``Idempotency-Key`` on its next start, and the centre's ``duplicate``
answer makes a batch it already applied harmless. Rows leave the outbox only on ``200``.

``batch_id`` is deterministic: a hash of the hub, the first and last outbox row and the
records' content. ``seq`` grows by one per formed batch.

Answers: ``200`` ack; ``400``/``422`` the batch is parked (rows kept, marked, counted,
logged) and sending goes on; ``413`` the batch is split (halved) and a single record that is
still too large is parked; ``401``/``403``, other ``4xx``, ``5xx`` and network errors retry
with exponential backoff and full jitter (``uniform(0, min(cap, base * 2**n))``). A ``401``
whose signed server time shows the hub's clock is off is signed again at once with the
corrected time (``clock.py``); ``clock`` injects the hub's clock.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from footfall.cloud_sync import outbox
from footfall.cloud_sync.clock import CentralClock
from footfall.cloud_sync.config import SyncConfig

log = logging.getLogger(__name__)

BATCHES_PATH = "/api/v1/sync/batches"
PROTOCOL_VERSION = 1
RETRYABLE = "retry"


@dataclass
class Batch:
    batch_id: str
    seq: int
    first_id: int
    last_id: int
    records: int
    body: bytes  # gzip of the JSON, exactly as sent (and signed)
    attempts: int = 0


@dataclass
class SendOutcome:
    """What one attempt did: ``empty``, ``sent``, ``duplicate``, ``parked``, ``split`` or ``retry``."""

    status: str
    batch_id: str | None = None
    seq: int | None = None
    records: int = 0
    http_status: int | None = None
    error: str | None = None


@dataclass
class DrainResult:
    ok: bool
    batches: int = 0
    records: int = 0
    duplicates: int = 0
    parked: int = 0
    failures: int = 0
    delays: list[float] = field(default_factory=list)


# Characters json.dumps(..., ensure_ascii=False) escapes in a string; any other string is
# written as itself between quotes (the usual key: a hex device id).
_JSON_ESCAPED = re.compile(r'[\x00-\x1f"\\]')


def _json_str(text: str) -> str:
    if _JSON_ESCAPED.search(text) is None:
        return '"' + text + '"'
    return json.dumps(text, ensure_ascii=False)


def _record_text(kind: str, key: str, data_text: str) -> str:
    return '{"kind":' + _json_str(kind) + ',"key":' + _json_str(key) + ',"data":' + data_text + "}"


class Sender:
    """Sends the hub's outbox; one instance per process, used from one thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: SyncConfig,
        secret: bytes,
        *,
        session: requests.Session | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] | None = None,
        stop: threading.Event | None = None,
        clock: CentralClock | Callable[[], float] | None = None,
    ) -> None:
        self.conn = conn
        self.config = config
        self.secret = secret
        self.session = session or requests.Session()
        self.rng = rng or random.Random()
        self.stop_event = stop or threading.Event()
        self._sleep = sleep or self.stop_event.wait
        # Shrinks after a 413 so the next batches fit; never grows past the configured size.
        self.max_records = config.batch_records
        self.failures = 0  # failed attempts in a row: drives the backoff
        self._ahead = False  # the last batch was acknowledged: form the next while one is out
        self.retry_at = 0.0  # monotonic time before which drain() does not try again
        self.url = config.endpoint(BATCHES_PATH) if config.url else ""
        # The hub's clock and its measured offset to the centre's, shared with pushback and the
        # fleet report of the same cycle (cloud_sync/clock.py); a bare callable is the hub's clock.
        self.clock = clock if isinstance(clock, CentralClock) else CentralClock(clock)

    # -- forming ------------------------------------------------------------------------------
    def pending_batch(self) -> Batch | None:
        row = self.conn.execute(
            "SELECT batch_id, seq, first_id, last_id, records, body, attempts FROM sync_batches ORDER BY seq LIMIT 1"
        ).fetchone()
        return Batch(*row) if row else None

    def form_batch(self, *, now: float | None = None) -> Batch | None:
        """The next batch: the unacknowledged one if any, else a new one from pending rows."""
        existing = self.pending_batch()
        if existing is not None:
            return existing
        return self._form_new(self.clock.local() if now is None else now)

    def _form_new(self, now: float) -> Batch | None:
        """Form a batch from the first pending rows (whatever batches are formed already)."""
        cfg = self.config
        with self.conn:
            if not self.conn.in_transaction:
                # Read the rows and freeze them in one write transaction: nothing (an enqueue
                # replacing a row's data, an unpark) can change them in between.
                self.conn.execute("BEGIN IMMEDIATE")
            rows = self.conn.execute(
                "SELECT id, kind, key, data FROM sync_outbox WHERE batch_id IS NULL AND parked IS NULL "
                "ORDER BY id LIMIT ?",
                (self.max_records,),
            ).fetchall()
            if not rows:
                return None
            pieces: list[str] = []
            ids: list[int] = []
            size = 200
            for rid, kind, key, data in rows:
                piece = _record_text(kind, key, data)
                n = len(piece.encode("utf-8")) + 1
                if size + n > cfg.batch_bytes:
                    if not pieces:
                        self._park("id = ?", (rid,), f"record of {n} bytes exceeds batch_bytes {cfg.batch_bytes}", now)
                        outbox.count(self.conn, "parked_records", 1, now)
                        log.error("sync: parked outbox row %d (%s): larger than one batch may be", rid, kind)
                        return None
                    break
                pieces.append(piece)
                ids.append(rid)
                size += n
            content = hashlib.sha256("\n".join(pieces).encode("utf-8")).hexdigest()
            batch_id = hashlib.sha256(f"{cfg.site}|{ids[0]}|{ids[-1]}|{content}".encode()).hexdigest()[:32]
            seq = int(outbox.get_state(self.conn, "next_seq", "1") or 1)
            head = {"v": PROTOCOL_VERSION, "hub": cfg.site, "batch_id": batch_id, "seq": seq, "created": round(now, 3)}
            text = json.dumps(head, separators=(",", ":"))[:-1] + ',"records":[' + ",".join(pieces) + "]}"
            body = gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)
            # The rows read are the first pending ones in id order and ids only grow, so the
            # pending rows of this id range are exactly them (no list of thousands of ids).
            self.conn.execute(
                "UPDATE sync_outbox SET batch_id = ? WHERE id BETWEEN ? AND ? AND batch_id IS NULL AND parked IS NULL",
                (batch_id, ids[0], ids[-1]),
            )
            self.conn.execute(
                "INSERT INTO sync_batches (batch_id, seq, first_id, last_id, records, body, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (batch_id, seq, ids[0], ids[-1], len(ids), body, now),
            )
            outbox.set_state(self.conn, "next_seq", seq + 1)
        return Batch(batch_id, seq, ids[0], ids[-1], len(ids), body)

    def _park(self, where: str, args: tuple[Any, ...], reason: str, now: float) -> None:
        self.conn.execute(
            f"UPDATE sync_outbox SET parked = ?, park_reason = ? WHERE {where}", (now, reason[:500], *args)
        )

    def _unform(self, batch: Batch) -> None:
        """Give a batch's rows back to the queue (413: it is re-cut smaller)."""
        with self.conn:
            outbox.release_batch(self.conn, batch.batch_id)

    # -- sending ------------------------------------------------------------------------------
    def post(self, batch: Batch) -> requests.Response:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Idempotency-Key": batch.batch_id}
        return self.clock.request(self.session, self.config, self.secret, "POST", self.url, batch.body, headers)

    def _post_forming_next(self, batch: Batch) -> requests.Response:
        """POST ``batch`` from a helper thread and meanwhile form the next batch, so the hub's
        work (SQLite, JSON, gzip) overlaps the centre's instead of adding to it.

        Safe for exactly-once: the next batch is formed like any other (its own rows, id and
        seq, stored before it is sent) and goes out only after this one is answered; what
        happens to this one (ack, park, re-cut, retry) is handled as without it. A batch
        re-cut or released later gives up its older versions of records a later row holds
        (``outbox.release_batch``), so nothing is sent after its newer version."""
        box: dict[str, Any] = {}

        def post() -> None:
            try:
                box["resp"] = self.post(batch)
            except BaseException as exc:  # handed to the caller below
                box["exc"] = exc

        worker = threading.Thread(target=post, name="sync-post", daemon=True)
        worker.start()
        try:
            if self.conn.execute("SELECT count(*) FROM sync_batches").fetchone()[0] == 1:
                self._form_new(self.clock.local())
        except sqlite3.Error:
            log.exception("sync: could not form the next batch ahead; it is formed after this one")
        finally:
            worker.join()
        if "exc" in box:
            raise box["exc"]
        return box["resp"]

    def send_once(self, *, now: float | None = None) -> SendOutcome:
        """Form (or take up again) the next batch and make one attempt to deliver it."""
        batch = self.form_batch(now=now)
        if batch is None:
            if self.conn.execute(
                "SELECT 1 FROM sync_outbox WHERE batch_id IS NULL AND parked IS NULL LIMIT 1"
            ).fetchone():
                return SendOutcome("parked")  # an oversized record was parked; more remain
            return SendOutcome("empty")
        now = self.clock.local() if now is None else now
        ahead, self._ahead = self._ahead and self.config.form_ahead, False
        try:
            resp = self._post_forming_next(batch) if ahead else self.post(batch)
        except requests.RequestException as exc:
            return self._failed(batch, None, f"{type(exc).__name__}: {exc}", now)
        code = resp.status_code
        if code == 200:
            return self._acked(batch, resp, now)
        detail = _error_text(resp)
        if code in (400, 422):
            return self._parked(batch, code, detail, now)
        if code == 413:
            if batch.records > 1:
                self._unform(batch)
                self.max_records = max(1, batch.records // 2)
                log.warning("sync: batch seq %d too large (413); re-cutting at %d records", batch.seq, self.max_records)
                with self.conn:
                    outbox.count(self.conn, "split_batches", 1, now)
                return SendOutcome("split", batch.batch_id, batch.seq, batch.records, code, detail)
            return self._parked(batch, code, detail, now)
        if code in (401, 403):
            log.error("sync: central rejected this hub's authentication (%d): %s", code, detail)
            with self.conn:
                outbox.count(self.conn, "auth_failures", 1, now)
        return self._failed(batch, code, f"HTTP {code}: {detail}", now)

    def _acked(self, batch: Batch, resp: requests.Response, now: float) -> SendOutcome:
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "accepted" not in answer:
            # A 200 from something that is not the centre (a captive portal, a wrong URL behind
            # a catch-all proxy) must not delete the outbox.
            return self._failed(batch, 200, "200 without the centre's answer (accepted/duplicate)", now)
        duplicate = bool(answer.get("duplicate"))
        with self.conn:
            self.conn.execute("DELETE FROM sync_outbox WHERE batch_id = ?", (batch.batch_id,))
            self.conn.execute("DELETE FROM sync_batches WHERE batch_id = ?", (batch.batch_id,))
            outbox.set_state(self.conn, "acked_seq", batch.seq)
            outbox.set_state(self.conn, "last_success", now)
            outbox.count(self.conn, "sent_batches", 1, now)
            outbox.count(self.conn, "sent_records", batch.records, now)
            outbox.count(self.conn, "sent_bytes", len(batch.body), now)
            if duplicate:
                outbox.count(self.conn, "duplicate_batches", 1, now)
            rejected = answer.get("rejected")
            if isinstance(rejected, int) and rejected > 0:
                outbox.count(self.conn, "rejected_records", rejected, now)
        if isinstance(rejected, int) and rejected > 0:
            # The centre applied the rest; a record it refused would be refused again, so it is
            # logged and counted rather than retried.
            log.error("sync: centre refused %d records of batch seq %d: %s", rejected, batch.seq, answer.get("errors"))
        if self.max_records < self.config.batch_records:
            self.max_records = min(self.config.batch_records, self.max_records * 2)
        log.info("sync: batch seq %d (%d records) acknowledged%s", batch.seq, batch.records, " (dup)" * duplicate)
        self._ahead = True  # the centre takes batches: the next one may be formed while this one is out
        return SendOutcome("duplicate" if duplicate else "sent", batch.batch_id, batch.seq, batch.records, 200)

    def _parked(self, batch: Batch, code: int, detail: str, now: float) -> SendOutcome:
        with self.conn:
            self._park("batch_id = ?", (batch.batch_id,), f"HTTP {code}: {detail}", now)
            self.conn.execute("DELETE FROM sync_batches WHERE batch_id = ?", (batch.batch_id,))
            outbox.count(self.conn, "parked_batches", 1, now)
            outbox.count(self.conn, "parked_records", batch.records, now)
        log.error(
            "sync: central refused batch seq %d (%s, %d records) with %d: %s; parked, going on",
            batch.seq,
            batch.batch_id,
            batch.records,
            code,
            detail,
        )
        return SendOutcome("parked", batch.batch_id, batch.seq, batch.records, code, detail)

    def _failed(self, batch: Batch, code: int | None, error: str, now: float) -> SendOutcome:
        with self.conn:
            self.conn.execute(
                "UPDATE sync_batches SET attempts = attempts + 1, last_error = ? WHERE batch_id = ?",
                (error[:500], batch.batch_id),
            )
            outbox.count(self.conn, "send_failures", 1, now)
            outbox.set_state(self.conn, "last_error", error[:500])
        log.warning("sync: batch seq %d not delivered: %s", batch.seq, error)
        return SendOutcome(RETRYABLE, batch.batch_id, batch.seq, batch.records, code, error)

    # -- the loop -----------------------------------------------------------------------------
    def backoff_delay(self, failures: int) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**(failures-1)))."""
        cfg = self.config
        ceiling = min(cfg.backoff_cap_s, cfg.backoff_base_s * (2 ** min(max(failures - 1, 0), 32)))
        return self.rng.uniform(0.0, ceiling)

    def drain(self, *, max_attempts: int | None = None, deadline: float | None = None) -> DrainResult:
        """Send until the outbox is empty, backing off on failures.

        Gives up after ``max_attempts`` failures in a row, or once ``deadline`` (monotonic) is
        past; the failure streak (hence the backoff) carries over to the next call.
        """
        res = DrainResult(ok=False)
        if time.monotonic() < self.retry_at:
            return res  # still backing off from an earlier call
        while not self.stop_event.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return res  # a long backlog must not hold up pushback (opt-outs) for hours
            out = self.send_once()
            if out.status == "empty":
                res.ok = True
                return res
            if out.status in ("sent", "duplicate"):
                res.batches += 1
                res.records += out.records
                res.duplicates += out.status == "duplicate"
                self.failures = 0
                continue
            if out.status == "parked":
                res.parked += out.records
                self.failures = 0
                continue
            if out.status == "split":
                continue
            self.failures += 1
            res.failures += 1
            if max_attempts is not None and res.failures >= max_attempts:
                return res
            delay = self.backoff_delay(self.failures)
            if deadline is not None and time.monotonic() + delay > deadline:
                self.retry_at = time.monotonic() + delay
                return res
            res.delays.append(delay)
            self._sleep(delay)
        return res

    def stop(self) -> None:
        self.stop_event.set()


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])[:300]
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])[:300]
    except ValueError:
        pass
    return (resp.text or resp.reason or "")[:300]
