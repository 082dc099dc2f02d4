"""Attribution of ad exposure to visits (seed 004, case 2: a dealership network).

A media partner or ad platform hands over its **exposure log**: the hashed identifier it
served an ad to (the MAC MD5, the key the matching partners share with our sensors) and when.
:func:`import_exposures` reads it (CSV: ``mac_md5`` or ``hash``, ``ts`` as UNIX seconds or ISO
8601, optional ``channel``), keys every hash at once (``privacy.py``: the raw MD5 is never
stored) and counts and reports every row it refuses, with its line.

:func:`report` answers "did the people who saw the ad come to the showroom":

- **exposed-then-visited**: exposed identifiers with a visitor visit within ``window_days``
  after their first exposure, and by weekly exposure frequency (1, 2, 3-4, 5+), the
  "effective frequency corridor" of the case;
- **matched unexposed baseline**: a campaign is aimed at people likely to come anyway, so the
  exposed are compared with unexposed devices *like them*: the devices the sensors knew in the
  ``pre_days`` before the campaign, in strata by their visitor days then (0, 1, 2, 3, 4-5, 6-8,
  9+) and whether
  they passed by; in each stratum, the baseline is the share of its unexposed devices with a
  visit within the window after each exposed device's own exposure time (so time of year and
  week are matched too). ``lift`` = exposed rate - baseline, over the exposed of the
  pre-campaign universe, weighted by stratum, with a 90 % interval (normal approximation per
  stratum). The naive comparison (exposed against every unexposed device, unmatched) is
  printed beside it;
- **who can be seen at all**: only phones probing with their real (global) MAC carry the
  hash the platform knows; ``recognisable_share`` is the share of the store's visitor visits in
  the campaign period that carried one, and ``estimated_exposed_visitors`` divides the
  exposed-then-visited by it (exposed people who came with a randomizing phone are missed
  in the same proportion). Rates and lift compare like with like and need no such correction.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from footfall.hub.o2o import privacy

DAY = 86400.0
Z90 = 1.6449
MAX_ERRORS = 20
HASH_COLUMNS = ("mac_md5", "hash", "md5")
TIME_COLUMNS = ("ts", "time", "exposed_at", "timestamp")
# Visitor days before the campaign -> stratum: habit is what a campaign targets, so the
# strata follow it up to weekly visitors (a coarser 0 / 1 / 2+ left a regular and a
# twice-a-month visitor in one stratum and overstated lift by half on the test's world).
STRATA = (0, 1, 2, 3, 4, 4, 5, 5, 5, 6)
STRATUM_NAMES = ("0", "1", "2", "3", "4-5", "6-8", "9+")


@dataclass
class ImportResult:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def refuse(self, line: int, why: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"line {line}: {why}")


def _ts(text: str) -> float:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError("an ISO time needs its offset (Z or +03:00)") from None
        value = when.timestamp()
    # 2000-01-01 .. 2100-01-01: beyond that it is milliseconds (a common export) or garbage.
    if not math.isfinite(value) or not 946684800 <= value < 4102444800:
        raise ValueError("time must be UNIX seconds (not milliseconds) or ISO 8601, between 2000 and 2100")
    return value


def import_exposures(
    conn: sqlite3.Connection, text: str | Iterable[str], campaign: str, *, now: float | None = None
) -> ImportResult:
    """Store a campaign's exposures (idempotent: the same row twice is one exposure)."""
    if not campaign or len(campaign) > 100:
        raise ValueError("campaign must be 1..100 characters")
    now = time.time() if now is None else now
    subjects = privacy.attach(conn)
    reader = csv.DictReader(io.StringIO(text) if isinstance(text, str) else text)
    names = {(n or "").strip().lower(): n for n in reader.fieldnames or []}
    hcol = next((names[c] for c in HASH_COLUMNS if c in names), None)
    tcol = next((names[c] for c in TIME_COLUMNS if c in names), None)
    ccol = names.get("channel")
    if hcol is None or tcol is None:
        raise ValueError(f"the file needs a hash column ({' | '.join(HASH_COLUMNS)}) and a time column "
                         f"({' | '.join(TIME_COLUMNS)}); it has: {', '.join(names) or 'no header'}")  # fmt: skip
    res = ImportResult()
    rows = []
    for line, rec in enumerate(reader, start=2):
        res.rows += 1
        md5 = (rec.get(hcol) or "").strip().lower()
        if not privacy.is_raw(md5):
            res.refuse(line, "hash is not 32 hex digits")
            continue
        try:
            ts = _ts(rec.get(tcol) or "")
        except ValueError as exc:
            res.refuse(line, str(exc))
            continue
        if ts > now + DAY:
            res.refuse(line, "exposure time is in the future")
            continue
        channel = (rec.get(ccol) or "").strip()[:50] if ccol else ""
        rows.append((campaign, subjects.key(md5), ts, channel or None))
    with conn:
        before = conn.execute("SELECT count(*) FROM ad_exposures WHERE campaign = ?", (campaign,)).fetchone()[0]
        conn.executemany(
            "INSERT OR IGNORE INTO ad_exposures (campaign, subject, ts, channel) VALUES (?, ?, ?, ?)", rows
        )
        after = conn.execute("SELECT count(*) FROM ad_exposures WHERE campaign = ?", (campaign,)).fetchone()[0]
    res.accepted = after - before
    res.duplicates = len(rows) - res.accepted
    return res


def _union(times: list[float], w: float) -> list[tuple[float, float]]:
    """Reference times t with a visit in (t, t + w]: the union of [v - w, v) over visits v."""
    out: list[tuple[float, float]] = []
    for v in sorted(times):
        lo, hi = v - w, v
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _covered(devices: list[list[float]], refs: list[float], w: float) -> list[int]:
    """For each reference time: how many devices have a visit in (t, t + w] (one sweep)."""
    events: list[tuple[float, int]] = []
    for times in devices:
        for lo, hi in _union(times, w):
            events.append((lo, 1))
            events.append((hi, -1))
    events.sort()
    starts = [e[0] for e in events]
    running, acc = [], 0
    for _, d in events:
        acc += d
        running.append(acc)
    out = []
    for t in refs:
        i = bisect.bisect_right(starts, t)
        out.append(running[i - 1] if i else 0)
    return out


def _rate(k: float, n: int) -> float | None:
    return round(k / n, 4) if n else None


def report(
    conn: sqlite3.Connection, campaign: str, *, window_days: float = 7.0, pre_days: float = 90.0
) -> dict[str, Any]:
    privacy.attach(conn)  # registers o2o_subject(): visits hold raw or keyed hashes
    w = window_days * DAY
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    for subject, ts in conn.execute("SELECT subject, ts FROM ad_exposures WHERE campaign = ? ORDER BY ts", (campaign,)):
        first.setdefault(subject, ts)
        times.setdefault(subject, []).append(ts)
    if not first:
        raise KeyError(f"no exposures for campaign {campaign!r}")
    start = min(first.values())
    end = max(max(v) for v in times.values()) + w
    visits: dict[str, list[float]] = {}
    pre: dict[str, tuple[set[str], bool]] = {}
    seen: set[str] = set()
    recognised = total = 0
    for subject, first_seen, cls, day, has_hash in conn.execute(
        """SELECT o2o_subject(partner_hash), first_seen, class, day, partner_hash IS NOT NULL FROM visits
           WHERE excluded = 0 AND first_seen >= ? AND first_seen < ?""",
        (start - pre_days * DAY, end),
    ):
        if first_seen >= start and cls == "visitor":
            total += 1
            recognised += int(bool(has_hash))
        if subject is None:
            continue
        seen.add(subject)
        if first_seen < start:
            days, passed = pre.get(subject, (set(), False))
            if cls == "visitor":
                days.add(day)
            pre[subject] = (days, passed or cls != "visitor")
        elif cls == "visitor":
            visits.setdefault(subject, []).append(first_seen)

    def visited(subject: str, t0: float) -> bool:
        return any(t0 < v <= t0 + w for v in visits.get(subject, ()))

    exposed_visited = sum(visited(s, t0) for s, t0 in first.items())
    freq: dict[str, list[int]] = {}
    for s, t0 in first.items():
        n = sum(1 for t in times[s] if t < t0 + 7 * DAY)
        bucket = "1" if n == 1 else "2" if n == 2 else "3-4" if n <= 4 else "5+"
        f = freq.setdefault(bucket, [0, 0])
        f[0] += 1
        f[1] += int(visited(s, t0))

    def stratum(s: str) -> tuple[int, bool]:
        days, passed = pre[s]
        return STRATA[min(len(days), len(STRATA) - 1)], passed

    strata: dict[tuple[int, bool], dict[str, list]] = {}
    for s in pre:
        strata.setdefault(stratum(s), {"exposed": [], "unexposed": []})[
            "exposed" if s in first else "unexposed"
        ].append(s)
    matched_n = 0
    lift_sum = base_sum = var = 0.0
    rows = []
    for key in sorted(strata):
        ex, un = strata[key]["exposed"], strata[key]["unexposed"]
        if not ex:
            continue
        refs = [first[s] for s in ex]
        r_e = sum(visited(s, first[s]) for s in ex) / len(ex)
        if un:
            covered = _covered([visits.get(s, []) for s in un], refs, w)
            r_u = sum(covered) / (len(un) * len(refs))
        else:
            r_u = None
        rows.append({"pre_visit_days": STRATUM_NAMES[key[0]], "passed_by": key[1],
                     "exposed": len(ex), "unexposed": len(un), "exposed_rate": round(r_e, 4),
                     "baseline_rate": None if r_u is None else round(r_u, 4)})  # fmt: skip
        if r_u is None:
            continue
        matched_n += len(ex)
        lift_sum += len(ex) * (r_e - r_u)
        base_sum += len(ex) * r_u
        var += len(ex) ** 2 * (r_e * (1 - r_e) / len(ex) + r_u * (1 - r_u) / len(un))
    lift = lift_sum / matched_n if matched_n else None
    half = Z90 * math.sqrt(var) / matched_n if matched_n else None
    ex_pre = [s for s in pre if s in first]
    un_pre = [s for s in pre if s not in first]
    naive_e = _rate(sum(visited(s, first[s]) for s in ex_pre), len(ex_pre))
    naive_u = None
    if un_pre and ex_pre:
        covered = _covered([visits.get(s, []) for s in un_pre], sorted(first[s] for s in ex_pre), w)
        naive_u = round(sum(covered) / (len(un_pre) * len(ex_pre)), 4)
    share = recognised / total if total else None
    return {
        "campaign": campaign,
        "window_days": window_days,
        "pre_days": pre_days,
        "start": start,
        "end": end,
        "exposed": len(first),
        "exposures": sum(len(v) for v in times.values()),
        "exposed_seen_by_sensors": sum(1 for s in first if s in seen),
        "exposed_visited": exposed_visited,
        "exposed_visit_rate": _rate(exposed_visited, len(first)),
        "recognisable_share": None if share is None else round(share, 4),
        "estimated_exposed_visitors": round(exposed_visited / share, 1) if share else None,
        "matched": {
            "exposed": matched_n,
            "exposed_rate": round((lift_sum + base_sum) / matched_n, 4) if matched_n else None,
            "baseline_rate": round(base_sum / matched_n, 4) if matched_n else None,
            "lift": None if lift is None else round(lift, 4),
            "lift_low": None if lift is None else round(lift - half, 4),  # type: ignore[operator]
            "lift_high": None if lift is None else round(lift + half, 4),  # type: ignore[operator]
            "strata": rows,
        },
        "naive": {
            "exposed_rate": naive_e,
            "unexposed_rate": naive_u,
            "lift": round(naive_e - naive_u, 4) if naive_e is not None and naive_u is not None else None,
        },  # fmt: skip
        "frequency": [
            {
                "exposures_first_week": b,
                "exposed": freq[b][0],
                "visited": freq[b][1],
                "rate": _rate(freq[b][1], freq[b][0]),
            }
            for b in ("1", "2", "3-4", "5+")
            if b in freq
        ],
    }
