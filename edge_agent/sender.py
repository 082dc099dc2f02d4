"""The sender thread of :class:`~footfall.edge_agent.publish.Publisher`: disk buffer -> paho.

It commits what ``publish()`` queued (batched), deletes what the broker acknowledged (batched),
and hands buffered rows to paho in ``seq`` order within the in-flight window; the module
docstring of ``publish.py`` explains ordering and duplicates, ``held.py`` refused topics.
A mixin so the publisher's state stays in one object under one lock (``_cond``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from .buffer import BufferedMessage, DiskBuffer, DiskBufferError
from .held import HeldBack

log = logging.getLogger("footfall.edge_agent.publish")

# Puts are committed in batches: whichever comes first of this many messages (committed by the
# publish() call that fills the batch, so a busy producer cannot outrun the disk) or this long
# (committed by the sender thread, so a lone message does not wait for company).
COMMIT_BATCH = 256
COMMIT_INTERVAL = 0.02
# Only while the disk refuses writes can more than a batch wait in memory; then publish()
# blocks (backpressure) and finally raises.
MAX_PENDING = 20_000
PENDING_TIMEOUT = 10.0


class Sender:
    # Set by Publisher.__init__; declared here for the type checker.
    buffer: DiskBuffer
    window: int
    _client: mqtt.Client
    _cond: threading.Condition
    _commit_lock: threading.Lock
    _write_failing: bool
    _committing: int  # rows taken from _pending and being written, not on disk yet
    _pending: list[tuple[str, bytes, int, bool, str | None]]
    _acked: list[int]
    _inflight: dict[int, tuple[int | None, str]]
    _inflight_rows: int
    _early: dict[int, Any]
    _last_sent: int
    _held: HeldBack
    _rewind_to: int | None
    _send_window: int
    _connected: bool
    _barrier: bool
    _draining: bool
    _stopping: bool
    _counts: dict[str, int]

    def _can_send(self) -> bool:
        """Caller holds the lock. True when rows may go to paho now."""
        if not self._connected or self._draining:
            return False
        if self._barrier:
            if self._inflight_rows:
                return False
            self._barrier = False
        if self._inflight_rows >= self._send_window:
            return False
        return self.buffer.last_seq > self._last_sent or self._rewind_to is not None or self._held.due()

    def _urgent(self) -> bool:
        return (
            self._stopping
            or len(self._pending) >= COMMIT_BATCH
            or len(self._acked) >= max(1, self._send_window // 2)
            or (self._inflight_rows <= self._send_window // 2 and self._can_send())
        )

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    if not self._urgent():
                        if not self._pending and not self._acked:
                            self._cond.wait(1.0)
                        # Something arrived: give a batch a moment to form before one commit.
                        self._cond.wait_for(self._urgent, timeout=COMMIT_INTERVAL)
                    stopping = self._stopping
                with self._commit_lock:
                    with self._cond:
                        pending, self._pending = self._pending, []
                        acked, self._acked = self._acked, []
                        self._committing = len(pending)
                    ok = self._commit(pending, acked)
                if stopping:
                    if not ok:
                        log.error("closing with %d messages that could not be written to disk", len(self._pending))
                    return
                if not ok:
                    time.sleep(1.0)
                    continue
                self._send()
            except Exception:
                # The sender must outlive any bug: log, back off, carry on.
                log.exception("sender loop error")
                time.sleep(1.0)

    def _commit(self, pending: list[tuple[str, bytes, int, bool, str | None]], acked: list[int]) -> bool:
        """Write a batch of new rows and delete a batch of acknowledged ones; False on disk error.

        Callers hold ``_commit_lock`` from taking the batch until this returns.
        """
        if not pending and not acked:
            return True
        try:
            if pending:
                self.buffer.put_many(pending)
                pending = []
            if acked:
                self.buffer.ack_many(acked)
        except DiskBufferError as exc:
            log.error("disk buffer write failed, will retry: %s", exc)
            with self._cond:
                self._counts["write_errors"] += 1
                self._write_failing = True
                self._committing = 0
                # Put the batches back in front, keeping order, for the next attempt.
                self._pending[:0] = pending
                self._acked[:0] = acked
                self._cond.notify_all()
            return False
        with self._cond:
            self._write_failing = False
            self._committing = 0
            self._cond.notify_all()  # producers waiting on MAX_PENDING, flush()
        return True

    def _send(self) -> None:
        with self._cond:
            if not self._can_send():
                return
            free = self._send_window - self._inflight_rows
            if self._rewind_to is not None:
                # A refused topic was released: send again from its oldest held row; rows in
                # flight or acknowledged meanwhile are skipped, the still refused re-held.
                self._last_sent = min(self._last_sent, self._rewind_to - 1)
                self._rewind_to = None
            after = self._last_sent
            skip = {seq for seq, _ in self._inflight.values() if seq is not None} | set(self._acked)
            probes = self._held.probes(self._buffered)
        for _topic, seq in probes:
            rows = self.buffer.peek(1, after=seq - 1)
            if rows and rows[0].seq == seq and self._publish_row(rows[0]):
                free -= 1
        newest = self.buffer.last_seq
        wanted = max(1, free)
        rows = self.buffer.peek(wanted, after=after)
        for msg in rows:
            if not self._connected or self._draining:
                return
            if msg.seq in skip:
                self._last_sent = msg.seq
                continue
            with self._cond:
                held = self._held.hold(msg.topic, msg.seq)
            if held:
                self._last_sent = msg.seq
                continue
            if free <= 0 or not self._publish_row(msg):
                return
            free -= 1
            self._last_sent = msg.seq
        if len(rows) < wanted:
            # Everything up to `newest` is sent or was dropped for space: don't look there again.
            self._last_sent = max(self._last_sent, newest)
        with self._cond:
            if self._held.count > len(self.buffer):
                oldest = self.buffer.peek(1)
                self._held.trim(oldest[0].seq if oldest else newest + 1)

    def _buffered(self, seq: int) -> bool:
        rows = self.buffer.peek(1, after=seq - 1)
        return bool(rows) and rows[0].seq == seq

    def _publish_row(self, msg: BufferedMessage) -> bool:
        """Hand one buffered row to paho; False when paho refused to store it (retry later)."""
        try:
            info = self._client.publish(msg.topic, msg.payload, qos=max(1, msg.qos), retain=msg.retain)
        except (ValueError, TypeError) as exc:
            # A row no broker would take (not written by us: wildcards in the topic, ...)
            # would block the queue forever: drop it, loudly.
            log.error("dropping unsendable buffered message seq %d: %s", msg.seq, exc)
            with self._cond:
                self._counts["unsendable"] += 1
                self._acked.append(msg.seq)
            return True
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            return False  # it stays in the buffer for the next round
        self._claim(info.mid, msg.seq, msg.topic)
        return True

    def _claim(self, mid: int, seq: int | None, topic: str) -> None:
        # The PUBACK can be handled on paho's thread before publish() returns the mid here, and
        # paho holds its own lock while calling on_publish, so we cannot hold ours across
        # publish(): an ack for an unknown mid is parked in _early and matched here instead.
        with self._cond:
            if mid in self._early:
                self._settle(seq, topic, self._early.pop(mid))
            else:
                self._inflight[mid] = (seq, topic)
                if seq is not None:
                    self._inflight_rows += 1

    def _settle(self, seq: int | None, topic: str, reason: Any) -> None:
        """Caller holds the lock. The broker answered the publish of ``seq`` with ``reason``."""
        if getattr(reason, "is_failure", False):
            # MQTT 5 PUBACK >= 0x80 (0x87 Not authorized: the ACL): not delivered, so not
            # deleted; held back until the broker takes the topic again (held.py).
            self._held.refused(topic, seq, str(reason))
            self._cond.notify_all()
            return
        if self._held.is_refused(topic):
            first = self._held.accepted(topic, seq)
            if first is not None:
                self._rewind_to = first if self._rewind_to is None else min(self._rewind_to, first)
        self._acknowledged(seq)

    def _acknowledged(self, seq: int | None) -> None:
        if seq is not None:
            self._acked.append(seq)
            self._counts["acked"] += 1
        # Waking the sender on every PUBACK costs more than the work it would do: wake it when a
        # batch is worth a commit, when the window is half empty, or when it might be asleep.
        half = max(1, self._send_window // 2)
        if seq is None or len(self._acked) in (1, half) or self._inflight_rows == half or self._inflight_rows == 0:
            self._cond.notify_all()
