"""Publishes the broker refused: kept in the disk buffer, held back per topic, retried by a probe.

With MQTT 5 a broker answers a QoS 1 publish it will not take with a PUBACK reason code of 0x80
or more: 0x87 Not authorized when its ACL denies the topic (a sensor id or site that does not
match its credentials), 0x97 Quota exceeded, ... (MQTT 3.1.1 acknowledges such a publish as if
it were delivered, so those messages were deleted from the buffer and lost without a trace.)

A refused message is not delivered, so it is not deleted from the buffer: an ACL is fixed by an
operator, and then the backlog must still be there. Nor is it resent in a loop: a refusal is a
property of the topic, so once a topic is refused every message of it is held back (kept in the
buffer, not sent), and one probe (its oldest held message) goes out on every reconnect and then
after a backoff (``FIRST_RETRY_S`` doubling to ``MAX_RETRY_S``). When a probe is accepted the
topic is released and its held messages are sent again, in order. Other topics flow as usual
meanwhile. Held messages stay subject to the buffer's size bound like any other (oldest dropped
first), and after a restart every buffered message is tried once more.

Not thread-safe: the publisher calls it under its own lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("footfall.edge_agent.publish")

FIRST_RETRY_S = 30.0
MAX_RETRY_S = 600.0
REPEAT_S = 600.0  # a topic still refused is logged again at most this often


@dataclass
class _Refused:
    reason: str
    seqs: set[int] = field(default_factory=set)
    delay: float = FIRST_RETRY_S
    next_retry: float = 0.0
    probe: int | None = None  # seq of the probe in flight
    logged_at: float = 0.0
    since_logged: int = 0


class HeldBack:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        first_retry: float = FIRST_RETRY_S,
        max_retry: float = MAX_RETRY_S,
    ) -> None:
        self._clock = clock
        self.first_retry = first_retry
        self.max_retry = max_retry
        self._topics: dict[str, _Refused] = {}
        self.refusals = 0  # PUBACKs with a failure reason code, probes included

    @property
    def count(self) -> int:
        """Messages held back now (buffered, not sent because their topic is refused)."""
        return sum(len(t.seqs) for t in self._topics.values())

    def is_refused(self, topic: str) -> bool:
        return topic in self._topics

    def refused(self, topic: str, seq: int | None, reason: str) -> None:
        """The broker refused the publish of ``seq`` (None: a status message, not buffered)."""
        now = self._clock()
        self.refusals += 1
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _Refused(reason, delay=self.first_retry, next_retry=now + self.first_retry)
            t.logged_at = now
            log.warning(
                "MQTT broker refused a publish to %s: %s; messages of this topic stay in the disk buffer "
                "and are retried (one probe on reconnect, then every %.0f-%.0f s)",
                topic,
                reason,
                self.first_retry,
                self.max_retry,
            )
        elif now - t.logged_at >= REPEAT_S or reason != t.reason:
            log.warning(
                "MQTT broker still refuses publishes to %s: %s (%d more refusals in %.0f min; %d messages held)",
                topic,
                reason,
                t.since_logged + 1,
                (now - t.logged_at) / 60,
                len(t.seqs) + (seq is not None),
            )
            t.reason, t.logged_at, t.since_logged = reason, now, 0
        else:
            t.since_logged += 1
        if seq is not None:
            t.seqs.add(seq)
            if seq == t.probe:
                t.probe = None
                t.next_retry = now + t.delay
                t.delay = min(t.delay * 2, self.max_retry)

    def hold(self, topic: str, seq: int) -> bool:
        """True (and the message is held) if ``topic`` is refused: the caller does not send it."""
        t = self._topics.get(topic)
        if t is None:
            return False
        t.seqs.add(seq)
        return True

    def retry_now(self) -> None:
        """On a new connection: probe every refused topic at once (the ACL may have changed).

        A topic whose probe is still unanswered keeps it: paho resends that publish after the
        reconnect, and the resend is this connection's probe; a second one would send the same
        row twice.
        """
        now = self._clock()
        for t in self._topics.values():
            if t.probe is None:
                t.next_retry = now

    def due(self) -> bool:
        now = self._clock()
        return any(t.probe is None and t.seqs and t.next_retry <= now for t in self._topics.values())

    def probes(self, exists: Callable[[int], bool]) -> list[tuple[str, int]]:
        """(topic, seq) of one probe per topic whose retry is due; marks them in flight.

        ``exists(seq)``: whether the buffer still has the row (the size bound may have dropped it).
        """
        now = self._clock()
        out = []
        for topic, t in self._topics.items():
            if t.probe is not None or t.next_retry > now:
                continue
            while t.seqs:
                seq = min(t.seqs)
                if exists(seq):
                    t.probe = seq
                    out.append((topic, seq))
                    break
                t.seqs.discard(seq)
            if not t.seqs:
                t.next_retry = now + t.delay  # nothing to probe with: the next new message will be
        return out

    def accepted(self, topic: str, seq: int | None) -> int | None:
        """A publish to ``topic`` was acknowledged: if the topic was refused, release it.

        Returns the lowest held seq to send again from (None when nothing was held).
        """
        t = self._topics.pop(topic, None)
        if t is None:
            return None
        if seq is not None:
            t.seqs.discard(seq)
        log.info("MQTT broker accepts publishes to %s again; sending the %d messages held back", topic, len(t.seqs))
        return min(t.seqs, default=None)

    def trim(self, oldest: int) -> None:
        """Forget held seqs below ``oldest``: the buffer dropped them for space."""
        for t in self._topics.values():
            t.seqs = {s for s in t.seqs if s >= oldest}

    def held_seqs(self) -> set[int]:
        out: set[int] = set()
        for t in self._topics.values():
            out |= t.seqs
        return out
