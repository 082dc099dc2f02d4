"""People in the store now: the sensors' live presence counts, scaled by what the site's own
past says a count means.

Occupancy per minute (``hub/occupancy.py``) is final only once every visit of that minute has
been sent: a sensor sends a visit when the phone has been silent for its visit gap, so people
still inside have no visit at the hub yet and the latest estimated minutes are short of them.
The sensors' presence reports (MACs heard inside in the last window, per sensor) arrive every
minute but count MAC addresses, not people: a phone that draws a new address every scan
counts several times. The ratio between the two is measured where both are known: minutes old
enough for their occupancy to be final (:data:`SETTLED_S` before the latest estimated one)
over the last :data:`HISTORY_S`, after taking off the count of the site's empty minutes (staff,
equipment, the neighbours). ``people now = ratio x (count - background)``, with a 90 %
range from the spread of people around that line on those minutes.

The count is the mean of the last :data:`SMOOTH_MINUTES` per-minute counts, at fitting and
at use alike: a phone scans every one to two minutes, so one minute's count hears about half
the phones present, a different half every minute. A quarter of an hour's mean is far steadier
and lags the people inside by about seven minutes, which costs less than the noise it takes out
while visits last ten minutes to an hour (docs/metrics.md, "Now in store").
"""

from __future__ import annotations

import math
import sqlite3
from datetime import tzinfo
from typing import Any

from footfall.hub import figures
from footfall.hub.metrics_today import latest_presence

HISTORY_S = 7 * 86400.0
SETTLED_S = 2 * 3600.0  # a minute this far behind the latest estimated one has (nearly) all its visits
MIN_MINUTES = 60  # minutes with people or presence before the ratio is trusted
Z90 = 1.645
PRESENCE_MAX_AGE_S = 180.0  # a presence report older than this is not "now"
OCCUPANCY_MAX_AGE_S = 3600.0  # nor is an estimated minute older than this
SMOOTH_MINUTES = 15  # tuning seeds 4 and 8, replayed: 10, 15 and 20 close, 15 the least error of the two


def presence_per_minute(conn: sqlite3.Connection, start: float, end: float) -> dict[int, int]:
    """Per minute (UTC seconds): the largest zone count (zones overlap, as in metrics_today.now_in_store)."""
    out: dict[int, int] = {}
    for minute, inside in conn.execute(
        "SELECT CAST(ts / 60 AS INTEGER) * 60 AS m, max(inside) FROM presence WHERE ts >= ? AND ts < ? GROUP BY m",
        (start, end),
    ):
        out[int(minute)] = int(inside)
    return out


def smoothed(per_minute: dict[int, int], minute: int, minutes: int = SMOOTH_MINUTES) -> float | None:
    """Mean count of the ``minutes`` minutes up to ``minute`` that have a report, or None."""
    vals = [per_minute[m] for m in range(minute - 60 * (minutes - 1), minute + 1, 60) if m in per_minute]
    return sum(vals) / len(vals) if vals else None


def fit_ratio(conn: sqlite3.Connection, now: float, minutes: int = SMOOTH_MINUTES) -> dict[str, Any] | None:
    """People per presence count over the settled minutes before ``now``; None without enough."""
    row = conn.execute("SELECT max(minute) FROM occupancy WHERE minute <= ?", (now,)).fetchone()
    if row is None or row[0] is None:
        return None
    end = row[0] - SETTLED_S
    presence = presence_per_minute(conn, end - HISTORY_S - 60 * minutes, end)
    pairs = []
    for m, people in conn.execute(
        "SELECT minute, people FROM occupancy WHERE minute >= ? AND minute < ?", (end - HISTORY_S, end)
    ):
        count = smoothed(presence, int(m), minutes) if m in presence else None
        if count is not None and (count > 0 or people > 0):
            pairs.append((count, people))
    # Staff, equipment and the neighbours are in the count too, also when nobody is in the
    # shop: the count of the empty minutes is the site's background, taken off first.
    empty = sorted(c for c, p in pairs if p < 0.05)
    background = empty[len(empty) // 2] if len(empty) >= MIN_MINUTES // 2 else 0
    pairs = [(max(c - background, 0), p) for c, p in pairs]
    pairs = [(c, p) for c, p in pairs if c > 0 or p > 0]
    if len(pairs) < MIN_MINUTES or not sum(c for c, _ in pairs):
        return None
    ratio = sum(p for _, p in pairs) / sum(c for c, _ in pairs)
    sd = math.sqrt(sum((p - ratio * c) ** 2 for c, p in pairs) / (len(pairs) - 1))
    return {"ratio": ratio, "background": background, "sd": sd, "minutes": len(pairs), "until": end}


def now_people(
    conn: sqlite3.Connection, now: float, max_age_s: float = PRESENCE_MAX_AGE_S, minutes: int = SMOOTH_MINUTES
) -> dict[str, Any] | None:
    """People inside now from the sensors' latest presence counts (the largest zone, as in
    metrics_today.now_in_store, averaged over the last ``minutes``), or None (no fresh count, no
    ratio yet). Uncalibrated."""
    zones = latest_presence(conn, now, max_age_s)
    if not zones:
        return None
    fit = fit_ratio(conn, now, minutes)
    if fit is None:
        return None
    latest = max(ts for _, ts, _, _ in zones)
    minute = int(latest // 60) * 60
    # The latest minute may not have every sensor's report yet: it takes each fresh sensor's
    # latest (the largest zone), the minutes before it are complete.
    per_minute = presence_per_minute(conn, minute - 60 * minutes, minute)
    per_minute[minute] = max(inside for _, _, _, inside in zones)
    count = smoothed(per_minute, minute, minutes) or 0.0
    people = fit["ratio"] * max(count - fit["background"], 0)
    half = Z90 * fit["sd"]
    return {
        "people": round(people, 1),
        "people_low": round(max(0.0, people - half), 1),
        "people_high": round(people + half, 1),
        "as_of": latest,
        "age_s": round(max(0.0, now - latest), 1),
        "presence": round(count, 1),
        "ratio": round(fit["ratio"], 4),
        "background": fit["background"],
        "fitted_minutes": fit["minutes"],
    }


def store_now(
    conn: sqlite3.Connection,
    now: float,
    tz: tzinfo,
    *,
    presence_max_age_s: float = PRESENCE_MAX_AGE_S,
    occupancy_max_age_s: float = OCCUPANCY_MAX_AGE_S,
) -> dict[str, Any] | None:
    """What /api/now serves as people inside: the calibrated presence estimate when the site has
    one, else the occupancy at the latest estimated minute if recent enough, else None (the
    caller shows heard counts). ``source`` says which."""
    live = now_people(conn, now, presence_max_age_s)
    if live is not None:
        k = figures.latest_calibration(conn).visitors
        return {
            "people": round(live["people"] * k, 1),
            "people_low": round(live["people_low"] * k, 1),
            "people_high": round(live["people_high"] * k, 1),
            "as_of": live["as_of"],
            "source": "presence_calibrated",
        }
    est = figures.now_people(conn, now, tz)
    if est is not None and est["age_s"] <= occupancy_max_age_s:
        return {k: est[k] for k in ("people", "people_low", "people_high", "as_of")} | {"source": "occupancy"}
    return None
