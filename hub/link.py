"""The hub's periodic job: link devices, rebuild store visits, estimate people, per local day.

Ingest keys a sensor visit by its MAC hash at once (it must keep up with every sensor), so a
phone that rotates its random MAC shows up as many one-MAC visits. Every ``link_every_s`` the
hub runs :func:`relink` over the local days it touches, each day whole (shops are closed at
night, so a day is a natural unit; a device heard in the last ``max_gap_s`` before midnight
continues, see ``warm``):

1. the day's **site model** (``hub/estimate.py``: inside/outside, scan rate, ...) and link model
   (``hub/linkmodel.py``), fitted on the previous seven days and then frozen for the day, so a
   day's figures never move because the model did; on a site's first day, on the day itself
   (provisional, refitted hourly);
2. **linking** (``hub/analysis.py``, ``hub/derandomize.py``) of the sensor visits that began
   before the watermark ``now - settle_s`` (a sensor sends a visit when the device has been
   silent for 10 minutes: the last minutes are not complete yet). The tracker is causal, so
   visits before an earlier watermark keep their devices;
3. the day's **store visits** rebuilt from its sensor visits, grouped by device
   (``hub/merge.py``); later ones keep their MAC hash until linked;
4. **estimates** of people for the day and each hour, with ranges, and people present per
   minute, written to ``estimates`` and ``occupancy``; the summaries of raw counts refreshed.
   They are stored uncalibrated: a site's calibration against a door count applies when they
   are read (``hub/figures.py``), to every day at once.

Idempotent: running it twice gives the same rows.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from footfall.hub import devices, figures, linkmodel, returning
from footfall.hub.analysis import analyse, day_bounds, fit_models, hours_open, infer_open
from footfall.hub.config import HubConfig
from footfall.hub.derandomize import LinkSettings
from footfall.hub.estimate import SiteModel, estimate, fill_visit_dwell
from footfall.hub.merge import merge_new
from footfall.hub.occupancy import chained, per_minute
from footfall.hub.ranges import passersby_within

log = logging.getLogger(__name__)

HISTORY_DAYS = 7
PROVISIONAL_REFIT_S = 3600.0


@dataclass
class RelinkResult:
    sensor_visits: int = 0
    visits_before: int = 0
    visits_after: int = 0
    devices_before: int = 0
    devices_after: int = 0
    seconds: float = 0.0
    days: list[str] = field(default_factory=list)
    # The last day's analysis (devices, stays, model), for callers that look further (evaluation).
    analysis: Any = field(default=None, repr=False, compare=False)


class KeyEstimator:
    """Device keys from a finished linking (``visit id -> key``); the MAC hash otherwise."""

    name = "linker-v2"

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.keys = keys

    def device_key(self, sensor_visit: Mapping[str, Any]) -> str:
        return self.keys.get(sensor_visit["id"], sensor_visit["device"])

    def estimate_unique(self, conn, start, end, **kw):  # pragma: no cover - not used by merge
        raise NotImplementedError


def _rows(conn: sqlite3.Connection, sql: str, args: tuple) -> list[dict[str, Any]]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _days(since: float, until: float, config: HubConfig) -> list[str]:
    tz = config.tz
    d = datetime.fromtimestamp(since, tz).date()
    last = datetime.fromtimestamp(until, tz).date()
    out = []
    while d <= last:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def is_open_fn(config: HubConfig, visits: list[dict[str, Any]]):
    hours = config.opening_hours
    return hours_open(hours, config.tz) if hours else infer_open(visits, config.tz)


def site_model(
    conn: sqlite3.Connection, config: HubConfig, day: str, today_rows: list[dict[str, Any]], now: float
) -> tuple[SiteModel, linkmodel.LinkModel | None]:
    """The day's models: stored, or fitted on the previous days (or, on a first day, on itself)."""
    row = conn.execute(
        "SELECT model, link_model, provisional, fitted FROM site_models WHERE day = ?", (day,)
    ).fetchone()
    if row is not None and not (row[2] and now - row[3] >= PROVISIONAL_REFIT_S):
        model = SiteModel.from_dict(json.loads(row[0]))
        link = linkmodel.LinkModel.from_dict(json.loads(row[1])) if row[1] else None
        return model, link
    start, _ = day_bounds(day, config.tz)
    history = _rows(
        conn,
        "SELECT * FROM sensor_visits WHERE first_seen >= ? AND first_seen < ? ORDER BY first_seen, id",
        (start - HISTORY_DAYS * 86400.0, start),
    )
    provisional = not history
    rows = today_rows if provisional else history
    settings = LinkSettings()
    if rows:
        first = datetime.fromtimestamp(rows[0]["first_seen"], config.tz).date()
        what = f"{day} so far" if provisional else f"{first} to {date.fromisoformat(day) - timedelta(days=1)}"
        model, link = fit_models(rows, is_open_fn(config, rows), settings, fitted_on=what)
        if not provisional:
            model.visit_dwell_s = _history_dwell(conn, day)
    else:
        model, link = SiteModel(fitted_on="nothing yet: defaults"), None
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO site_models (day, model, link_model, provisional, fitted) VALUES (?, ?, ?, ?, ?)",
            (day, json.dumps(model.to_dict()), json.dumps(link.to_dict()) if link else None, int(provisional), now),
        )
    return model, link


def _history_dwell(conn: sqlite3.Connection, day: str) -> float:
    """The mean visit dwell of the stays on the days fitted on (visitors-weighted), 0 without
    any: how many scans a visitor's phone makes here (estimate.SiteModel.people). Taken from the
    stored estimates, so that it is the estimation pass's, and frozen with the day's model:
    today's visitors are not revised as today's long visits end. The stays' mean, not the
    dashboard's (Little's law since 2026-12-06, hub/dwell.py): the visitor model was fitted
    against the stays' (rows from before keep only the dashboard's, which was the stays')."""
    today = date.fromisoformat(day)
    total = weighted = 0.0
    for f in figures.day_rows(conn, today - timedelta(days=HISTORY_DAYS), today - timedelta(days=1)).values():
        visitors, dwell = f.get("visitors"), f.get("stays_mean_dwell_s", f.get("mean_dwell_s"))
        if visitors and dwell:
            total += visitors
            weighted += visitors * dwell
    return weighted / total if total else 0.0


def relink(
    conn: sqlite3.Connection,
    config: HubConfig,
    *,
    since: float,
    until: float | None = None,
    now: float | None = None,
    settings: LinkSettings | None = None,
) -> RelinkResult:
    """Link and estimate every local day from ``since`` to the watermark (``until``, by default
    ``now - settle_s``). Sensor visits after the watermark keep their MAC hash as key."""
    now = time.time() if now is None else now
    until = now - config.settle_s if until is None else until
    t0 = time.monotonic()
    total = RelinkResult()
    if conn.in_transaction:
        conn.commit()
    first_row = conn.execute("SELECT min(first_seen) FROM sensor_visits WHERE first_seen >= ?", (since,)).fetchone()
    if first_row[0] is None:
        return total
    for day in _days(max(since, first_row[0]), max(until, first_row[0]), config):
        r = relink_day(conn, config, day, until=until, now=now, settings=settings)
        total.sensor_visits += r.sensor_visits
        total.visits_before += r.visits_before
        total.visits_after += r.visits_after
        total.devices_before += r.devices_before
        total.devices_after += r.devices_after
        total.days.append(day)
        total.analysis = r.analysis
    total.seconds = time.monotonic() - t0
    log.info(
        "linked %d sensor visits over %s: %d -> %d store visits, %d -> %d devices in %.1fs",
        total.sensor_visits,
        ", ".join(total.days),
        total.visits_before,
        total.visits_after,
        total.devices_before,
        total.devices_after,
        total.seconds,
    )
    return total


def relink_day(
    conn: sqlite3.Connection,
    config: HubConfig,
    day: str,
    *,
    until: float,
    now: float,
    settings: LinkSettings | None = None,
) -> RelinkResult:
    t0 = time.monotonic()
    settings = settings or LinkSettings()
    start, end = day_bounds(day, config.tz)
    stop = min(end, until)
    rows = _rows(
        conn,
        "SELECT * FROM sensor_visits WHERE first_seen >= ? AND first_seen < ? ORDER BY first_seen, id",
        (start, end),
    )
    linked = [r for r in rows if r["first_seen"] < stop]
    model, link = site_model(conn, config, day, linked, now)
    warm_rows = _rows(
        conn,
        """SELECT s.*, v.device_key FROM sensor_visits s JOIN visits v ON v.id = s.visit_id
           WHERE s.first_seen >= ? AND s.first_seen < ? ORDER BY s.first_seen, s.id""",
        (start - settings.max_gap_s, start),
    )
    warm = (warm_rows, {r["id"]: r["device_key"] for r in warm_rows}) if warm_rows else None
    an = analyse(linked, is_open=is_open_fn(config, linked), model=model, link_model=link, settings=settings, warm=warm)
    result = RelinkResult(sensor_visits=len(rows), days=[day], analysis=an)
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = conn.execute(
            "SELECT id, device_key FROM visits WHERE first_seen >= ? AND first_seen < ?", (start, end)
        ).fetchall()
        old_keys = {r[1] for r in old}
        # Staff and background by behaviour, per day (a randomized phone has a new key every
        # day): hours heard inside is staff, hours heard outside is a neighbour's or the
        # corridor's device. Both are left out of every figure (hub/estimate.py does the same).
        held = _long_presence(an, start, stop)
        behaviour = _identity_keys(an, held)
        excluded = devices.excluded_keys(conn) | set(behaviour)
        # The identity pass's pieces of a staff or background device are not passers-by either;
        # those of a randomizing track as long as staff's may be (Session.in_track).
        tracks = {s.key for s in an.sessions if chained(s)}
        in_track = _identity_keys(an, {k: r for k, r in held.items() if k in tracks})
        for s in an.identity_sessions:
            if s.key in behaviour:
                s.long_presence = True
                s.in_track = s.key in in_track
        conn.execute(
            "UPDATE sensor_visits SET visit_id = NULL WHERE visit_id IN "
            "(SELECT id FROM visits WHERE first_seen >= ? AND first_seen < ?)",
            (start, end),
        )
        conn.execute("DELETE FROM visits WHERE first_seen >= ? AND first_seen < ?", (start, end))
        merge_new(
            conn, rows, gap_s=config.merge_gap_s, tz=config.tz, estimator=KeyEstimator(an.keys), excluded=excluded
        )
        conn.executemany(
            "UPDATE sensor_visits SET visit_id = ? WHERE first_seen = ? AND id = ?",
            [(r["visit_id"], r["first_seen"], r["id"]) for r in rows],
        )
        new_keys = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT device_key FROM visits WHERE first_seen >= ? AND first_seen < ?", (start, end)
            )
        }
        _recount_devices(conn, old_keys | new_keys, excluded)
        conn.executemany(
            "UPDATE devices SET excluded = 1, excluded_reason = coalesce(excluded_reason, ?) WHERE device_key = ?",
            [(reason, key) for key, reason in behaviour.items()],
        )
        _store_estimates(conn, config, day, start, stop, an, now)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    from footfall.hub import summaries

    summaries.summarize_day(conn, day, now=now)
    result.visits_before = len(old)
    result.visits_after = conn.execute(
        "SELECT count(*) FROM visits WHERE first_seen >= ? AND first_seen < ?", (start, end)
    ).fetchone()[0]
    result.devices_before, result.devices_after = len(old_keys), len(new_keys)
    result.seconds = time.monotonic() - t0
    return result


def _store_estimates(conn, config: HubConfig, day: str, start: float, stop: float, an, now: float) -> None:
    """The day's and each hour's estimates (visits count once over, see estimate()), and the
    people present per minute, replacing the day's rows."""
    watermark = now - config.settle_s
    shown = conn.execute("SELECT figures FROM estimates WHERE day = ? AND hour = -1", (day,)).fetchone()
    periods = [("day", start, stop)]
    tz = config.tz
    t = start
    while t < stop:
        h = datetime.fromtimestamp(t, tz).hour
        nxt = (
            datetime.fromtimestamp(t, tz).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        ).timestamp()
        periods.append((str(h), t, min(nxt, stop)))
        t = nxt
    fill_visit_dwell(an.model, an.sessions, start, stop, final_before=watermark)
    figures = estimate(an.sessions, an.model, periods, final_before=watermark, pass_sessions=an.identity_sessions)
    passersby_within(figures["day"], [figures[label] for label, _, _ in periods[1:]])
    by_networks, heard_networks = returning.followed_networks(an, start, stop) if config.follow_networks else ([], [])
    followed = returning.followed_fixed(an, start, stop) + by_networks
    came_back = returning.return_rate(conn, day, followed)
    returning.store(conn, day, followed, heard_networks)
    rows = []
    for label, _, _ in periods:
        f = figures[label]
        payload = f.as_dict() | {"sessions": f.sessions, "dwell_from": f.dwell_from}
        if f.stays_mean_dwell_s is not None:
            payload["stays_mean_dwell_s"] = round(f.stays_mean_dwell_s, 1)
        if f.passersby_counts:
            payload["passersby_counts"] = {k: round(v, 1) for k, v in f.passersby_counts.items()}
        if label == "day":
            payload |= came_back | {
                "dwell_hist": _dwell_hist(an, start, stop, f.median_dwell_s.estimate),
                "model": _model_note(an),
            }
            payload["revisions"] = revisions(json.loads(shown[0]) if shown else None, payload, now)
        rows.append((day, -1 if label == "day" else int(label), json.dumps(payload), stop, now))
    conn.execute("DELETE FROM estimates WHERE day = ?", (day,))
    conn.executemany("INSERT INTO estimates (day, hour, figures, watermark, computed) VALUES (?, ?, ?, ?, ?)", rows)
    minutes = per_minute(an.sessions, an.model, start, stop)
    conn.execute("DELETE FROM occupancy WHERE minute >= ? AND minute < ?", (int(start), int(stop) + 60))
    conn.executemany(
        "INSERT OR REPLACE INTO occupancy (minute, people) VALUES (?, ?)",
        [(m, round(p, 3)) for m, p in minutes.items()],
    )


MAX_REVISIONS = 50


def revisions(shown: Mapping[str, Any] | None, new: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
    """The day's record of counts taken back: those ``shown`` carried, and one more for each of its
    visitors and passers-by that ``new`` lowers. A run does not revise what the run before counted
    by more than a fraction of a per cent (docs/metrics.md, "Live figures"), but a manager who saw
    1,261 passers-by and now sees 1,254 is told so, with when, instead of finding it out."""
    out = list((shown or {}).get("revisions") or [])
    if shown:
        for name in ("visitors", "passersby"):
            before, after = shown.get(name), new.get(name)
            # What the page showed went down: whole people, rounded as the dashboard rounds them
            # (a tenth of a person less is no step back anyone saw).
            if before is not None and after is not None and shown_people(after) < shown_people(before):
                out.append({"figure": name, "from": before, "to": after, "at": round(now, 1)})
    return out[-MAX_REVISIONS:]


def shown_people(x: float) -> int:
    """A count as the dashboard shows it: whole people, halves up (JavaScript's Math.round)."""
    return math.floor(x + 0.5)


def _long_presence(an, start: float, stop: float) -> dict[str, str]:
    """Device keys heard for hours this day, with why they are left out."""
    out: dict[str, str] = {}
    for s in an.sessions:
        if s.staff and s.first < stop and s.last >= start:
            hours = (s.last - s.first) / 3600.0
            inside = sum(an.model.inside.llr(sc.peak) for sc in s.scans) > 0
            out[s.key] = f"{'staff (inside' if inside else 'background (outside'} for {hours:.1f} h on one day)"
    return out


def _identity_keys(an, by_estimation_key: dict[str, str]) -> dict[str, str]:
    """The same, keyed by the device keys the store keeps (the identity pass): every key most
    of whose visits belong to the estimation pass's staff or background device. The estimation
    pass joins generously, so a shopper's scan can land in the clerk's track; one such visit
    must not leave the shopper's whole key out of every figure."""
    total: Counter[str] = Counter()
    held: Counter[str] = Counter()
    reasons: dict[str, str] = {}
    for vid, key in an.estimation_keys.items():
        ident = an.keys.get(vid, key)
        total[ident] += 1
        reason = by_estimation_key.get(key)
        if reason is not None:
            held[ident] += 1
            reasons.setdefault(ident, reason)
    out = {k: reasons[k] for k, n in held.items() if 2 * n > total[k]}
    # Identified MACs are their own key in both passes (and may have no visit in either map).
    identified = {s.key for s in an.sessions if s.identified}
    for key, reason in by_estimation_key.items():
        if key in identified:
            out.setdefault(key, reason)
    return out


def _dwell_hist(an, start: float, stop: float, median_s: float | None = None) -> list[float]:
    """Visitors per dwell bin (metrics.DWELL_EDGES): multi-day medians add these up, and the
    engagement page's histogram and trade buckets are read off them. Each visit weighs its visit
    probability, as in the day's median (ranges.dwell_figures), scaled to the day's visitors: a
    stay's own people weight grows with its scans, and would tilt the histogram toward the long
    stays the tracker joined.

    With ``median_s`` (the day's estimated median) every stay's length is stretched by one
    factor so that the histogram's median is the day's: the stays give the shape, the estimate
    the scale. Without it a week's median (and a day's buckets) would be the stays' own, which
    the tracker cuts short where visits are long (with two sensors or more the day's median
    comes from Little's law instead: hub/dwell.py), and a week would disagree with its days."""
    from footfall.hub.estimate import visit_length
    from footfall.hub.metrics import DWELL_EDGES, dwell_bin
    from footfall.hub.ranges import weighted_quantile

    stays = [s for s in an.sessions if start <= s.first < stop and not s.staff and s.p_visit > 0]
    probability = sum(s.p_visit for s in stays)
    per_visit = sum(an.model.people(s) for s in stays) / probability if probability else 0.0
    lengths = [(visit_length(s, an.model), s.p_visit) for s in stays if len(s.scans) >= 2]
    own = weighted_quantile(lengths, 0.5)
    stretch = median_s / own if median_s and own else 1.0
    hist = [0.0] * len(DWELL_EDGES)
    for d, p in lengths:
        hist[dwell_bin(d * stretch)] += p * per_visit
    return [round(h, 3) for h in hist]


def _model_note(an) -> dict[str, Any]:
    m = an.model
    return {
        "fitted_on": m.fitted_on,
        "scan_interval_s": round(1.0 / m.scan_rate, 1),
        "identified_visits": m.identified,
        "inside_model": "site histograms" if m.inside.trained else "signal threshold (too little data yet)",
        "front_sensor": m.front_sensor,
        # The mean visit a randomizing phone's scans are set against (0: not used, one sensor).
        "mean_visit_s": round(m.visit_dwell_s, 1) if not m.weak else 0.0,
        "link_model": an.link_model.source if an.link_model else "default forms",
    }


def _recount_devices(conn: sqlite3.Connection, keys: set[str], excluded: set[str]) -> None:
    """Recompute ``devices`` rows of the keys a relink touched, from the visits stored.

    Keys that no visit uses any more (a MAC hash now folded into a linked device) disappear;
    exclusion (staff, fixed equipment) is kept for keys that had it.
    """
    key_list = sorted(keys)
    reasons: dict[str, str] = {}
    for start in range(0, len(key_list), 500):
        chunk = key_list[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        # Why a device is excluded (an operator's words, or the behaviour seen) outlives the recount.
        reasons.update(
            conn.execute(
                f"SELECT device_key, excluded_reason FROM devices WHERE device_key IN ({marks}) "
                "AND excluded_reason IS NOT NULL",
                chunk,
            ).fetchall()
        )
        conn.execute(f"DELETE FROM devices WHERE device_key IN ({marks})", chunk)
        conn.execute(
            f"""INSERT INTO devices (device_key, randomized, partner_hash, first_seen, last_seen, visit_count,
                                     total_dwell_s, excluded, first_visitor_day)
                SELECT device_key, max(randomized), max(partner_hash), min(first_seen), max(last_seen), count(*),
                       sum(dwell_s), max(excluded), min(CASE WHEN class = 'visitor' THEN day END)
                FROM visits WHERE device_key IN ({marks}) GROUP BY device_key""",
            chunk,
        )
    if excluded & keys:
        conn.executemany("UPDATE devices SET excluded = 1 WHERE device_key = ?", [(k,) for k in excluded & keys])
    if reasons:
        conn.executemany(
            "UPDATE devices SET excluded_reason = ? WHERE device_key = ?", [(r, k) for k, r in reasons.items()]
        )
