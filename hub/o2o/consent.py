"""Consent checks before any message leaves for a subscriber.

Order of the checks (the first failing one is the reason recorded on the target):

1. ``stop_list``     the subject (MAC MD5 or phone MD5) is on the stop-list: never contacted,
                     not even by system messages (a legal block, a complaint, a staff phone).
2. ``quiet_hours``   local time within the scenario's quiet hours: *deferred*, not dropped.
3. ``no_consent``    no advertising consent for the channel: the partner's ``messageable``
                     answer is the operator-held consent, and a local ``withdrawn`` record for
                     the channel overrides it.
4. ``unsubscribed``  the subject unsubscribed from this message category (or from all, ``*``).

System messages (a code confirmation the subscriber asked for) skip 2-4, never 1.
Subjects are hashes only (MAC MD5 in the partner's normal form, or phone MD5).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

ALL = "*"


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str = ""
    defer: bool = False  # try again later (quiet hours) instead of dropping


def in_quiet_hours(now: float, quiet: tuple[float, float] | None, tz: str) -> bool:
    """``quiet`` = (start, end) local hours; wraps midnight when start > end (21-9)."""
    if not quiet or quiet[0] == quiet[1]:
        return False
    t = datetime.fromtimestamp(now, ZoneInfo(tz))
    h = t.hour + t.minute / 60 + t.second / 3600
    start, end = quiet
    return start <= h < end if start < end else (h >= start or h < end)


def add_stop(conn: sqlite3.Connection, subject: str, reason: str = "", now: float | None = None) -> None:
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO o2o_stoplist (subject, reason, added) VALUES (?, ?, ?)",
            (subject.lower(), reason, time.time() if now is None else now),
        )


def remove_stop(conn: sqlite3.Connection, subject: str) -> bool:
    with conn:
        return conn.execute("DELETE FROM o2o_stoplist WHERE subject = ?", (subject.lower(),)).rowcount > 0


def set_consent(
    conn: sqlite3.Connection, subject: str, channel: str, state: str, category: str = ALL, now: float | None = None
) -> None:
    """``state``: granted | withdrawn (channel-wide) | unsubscribed (one category, or ``*``)."""
    if state not in ("granted", "withdrawn", "unsubscribed"):
        raise ValueError("consent state must be granted, withdrawn or unsubscribed")
    now = time.time() if now is None else now
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO o2o_consent (subject, channel, category, state, updated) VALUES (?, ?, ?, ?, ?)",
            (subject.lower(), channel, category, state, now),
        )
        if state == "withdrawn":
            # A withdrawal is also the end of sharing the person's phone hash with the centre.
            from footfall.hub.o2o import optout, privacy

            forms = privacy.attach(conn).forms(subject)
            m = ",".join("?" * len(forms))
            keys = {
                r[0]
                for r in conn.execute(
                    f"SELECT device_key FROM o2o_targets WHERE partner_hash IN ({m}) OR phone_md5 IN ({m})"
                    f" UNION SELECT device_key FROM devices WHERE partner_hash IN ({m})",
                    (*forms, *forms, *forms),
                )
            }
            optout.withdraw_sharing(conn, keys, now)


def on_stop_list(conn: sqlite3.Connection, subjects: Iterable[str | None]) -> bool:
    subs = [s.lower() for s in subjects if s]
    if not subs:
        return False
    q = ",".join("?" * len(subs))
    return conn.execute(f"SELECT 1 FROM o2o_stoplist WHERE subject IN ({q}) LIMIT 1", subs).fetchone() is not None


def check(
    conn: sqlite3.Connection,
    subjects: Iterable[str | None],
    *,
    channel: str,
    category: str,
    partner_consent: bool,
    now: float,
    quiet: tuple[float, float] | None = None,
    tz: str = "UTC",
    system: bool = False,
) -> Decision:
    subs = [s.lower() for s in subjects if s]
    if on_stop_list(conn, subs):
        return Decision(False, "stop_list")
    if system:
        return Decision(True)
    if in_quiet_hours(now, quiet, tz):
        return Decision(False, "quiet_hours", defer=True)
    q = ",".join("?" * len(subs)) or "NULL"
    rows = conn.execute(
        f"SELECT category, state FROM o2o_consent WHERE subject IN ({q}) AND channel = ?", (*subs, channel)
    ).fetchall()
    # The operator holds the subscriber's advertising consent; a local record can only withdraw it.
    if not partner_consent or any(r["state"] == "withdrawn" for r in rows):
        return Decision(False, "no_consent")
    if any(r["state"] == "unsubscribed" and r["category"] in (category, ALL) for r in rows):
        return Decision(False, "unsubscribed")
    return Decision(True)
