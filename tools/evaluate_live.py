"""``footfall evaluate --live``: a simulated store day replayed as it happens, the link job
every 15 minutes; how much each run revises the figures already shown, and whether today's
totals ever go down. The day goes through the same pipeline as ``--metrics``
(:mod:`footfall.tools.evaluate_pipeline`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from footfall.tools.evaluate_pipeline import Scenario, ingest, parse_seeds, scenario, simulate
from footfall.tools.simulator.store import check_dwell_scale


@dataclass
class LiveResult:
    scenario: Scenario
    day: str
    steps: int
    max_passersby_revision: float  # relative change of what the previous run had counted, by the next run
    max_visitors_revision: float
    max_capture_revision_pts: float
    backward_moves: int  # times today's passers-by or visitors total went down
    backward_shown: int = 0  # of those, times the whole people the dashboard shows went down
    rows: list[dict[str, Any]] = field(default_factory=list)
    backward: list[str] = field(default_factory=list)
    # The day's revisions as the hub records and shows them (link.revisions): each time a run
    # lowered a total already shown.
    revisions: list[dict[str, Any]] = field(default_factory=list)
    # "Now in store" at every minute while open, against the visitors truly inside at that
    # moment: mean absolute error of the dashboard's figure and of the alternatives it chose between.
    now_mae: dict[str, float] = field(default_factory=dict)


def evaluate_live(sc: Scenario, workdir: Path, step_s: float = 900.0) -> LiveResult:
    """Replay the last simulated day as it happens: every ``step_s`` the messages the agents sent
    by then reach the hub and the link job runs (``now`` = the simulated clock), as in a store.
    Measured: how much each run revises the hours that were already settled in the run before
    (the figures a manager has already read), and whether today's totals ever go down."""
    from footfall.hub import figures, link
    from footfall.hub.estimate import estimate

    run = simulate(sc, workdir)
    db = workdir / f"hub-live-{sc.seed}.db"
    if db.exists():
        db.unlink()
    last = run.truth["days"][-1]
    day = date.fromisoformat(last["date"])
    lo, hi = last["capture"]
    writer, i = ingest(run, db, until=lo)
    conn = writer.conn
    cfg = writer.config
    link.relink(conn, cfg, since=0, now=lo)
    day_start = datetime.combine(day, datetime.min.time(), UTC).timestamp()
    # What the first run showed is what the next one may revise.
    prev: dict[str, Any] = {
        "watermark": lo - cfg.settle_s,
        "totals": figures.period_totals(conn, day, day) or {},
    }
    res = LiveResult(sc, last["date"], 0, 0.0, 0.0, 0.0, 0)
    t = lo + step_s
    day_end = day_start + 86400
    now_rows: list[dict[str, Any]] = []
    while t <= hi + cfg.settle_s + step_s:
        # "Now in store" every minute between two link runs, as a dashboard polled each minute
        # sees it (every 15 minutes alone is too few moments to tell two methods apart).
        for m in range(int(t - step_s) + 60, int(t), 60):
            writer, i = ingest(run, db, until=m, start=i, writer=writer)
            row = _now_figures(conn, run.truth, m)
            if row["now_open"]:
                now_rows.append(row)
        writer, i = ingest(run, db, until=t, start=i, writer=writer)
        result = link.relink(conn, cfg, since=day_start, now=t)
        totals = figures.period_totals(conn, day, day) or {}
        if result.analysis is not None:
            # What this run says about the visits the previous run had already counted.
            an = result.analysis
            again = estimate(
                an.sessions,
                an.model,
                [("day", day_start, day_end)],
                final_before=prev["watermark"],
                pass_sessions=an.identity_sessions,
            )["day"]
            for name, attr in (("passersby", "max_passersby_revision"), ("visitors", "max_visitors_revision")):
                before = prev["totals"].get(name) or 0.0
                now_ = getattr(again, name).estimate or 0.0
                # Relative to at least 10 people: early in the day 0.1 -> 0.2 is not "+100 %".
                setattr(res, attr, max(getattr(res, attr), abs(now_ - before) / max(before, 10.0)))
            cap_before, cap_now = prev["totals"].get("capture_rate"), again.capture_rate.estimate
            if cap_before is not None and cap_now is not None:
                res.max_capture_revision_pts = max(res.max_capture_revision_pts, abs(cap_now - cap_before) * 100)
            for name in ("visitors", "passersby"):
                after, before = totals.get(name) or 0.0, prev["totals"].get(name) or 0.0
                if after < before - 1e-6:
                    res.backward_moves += 1
                    res.backward_shown += link.shown_people(after) < link.shown_people(before)
                    res.backward.append(
                        f"{name} {prev['totals'].get(name)} -> {totals.get(name)} at "
                        f"{datetime.fromtimestamp(t, UTC).strftime('%H:%M')}"
                    )
        res.rows.append(
            {
                "clock": datetime.fromtimestamp(t, UTC).strftime("%H:%M"),
                "visitors": totals.get("visitors"),
                "passersby": totals.get("passersby"),
                "capture_rate": totals.get("capture_rate"),
                **_now_figures(conn, run.truth, t),
            }
        )
        prev = {"watermark": t - cfg.settle_s, "totals": totals}
        t += step_s
    res.steps = len(res.rows)
    open_rows = now_rows + [r for r in res.rows if r["now_truth"] is not None and r["now_open"]]
    for name in ("now_dashboard", "now_presence_calibrated", "now_presence_1min", "now_occupancy", "now_presence_raw"):
        vals = [abs(r[name] - r["now_truth"]) for r in open_rows if r[name] is not None]
        if vals:
            res.now_mae[name] = sum(vals) / len(vals)
    res.now_mae["truth_mean"] = sum(r["now_truth"] for r in open_rows) / max(len(open_rows), 1)
    res.revisions = (figures.period_totals(conn, day, day) or {}).get("revisions", [])
    conn.close()
    return res


def _now_figures(conn, truth: dict[str, Any], t: float) -> dict[str, Any]:
    """People inside at ``t``: the truth, what /api/now serves, and its alternatives."""
    from footfall.hub import figures, metrics_today
    from footfall.hub.now import OCCUPANCY_MAX_AGE_S, now_people, store_now

    inside = sum(
        1 for p in truth["people"] if p["kind"] == "visitor" and p["inside"] and p["inside"][0] <= t < p["inside"][1]
    )
    served = store_now(conn, t, UTC)  # what /api/now serves, with its default age limits
    live = now_people(conn, t)
    one_minute = now_people(conn, t, minutes=1)  # the same from the latest minute's count alone
    occ = figures.now_people(conn, t, UTC)
    if occ is not None and occ["age_s"] > OCCUPANCY_MAX_AGE_S:
        occ = None
    raw = metrics_today.now_in_store(conn, now=t)
    k = figures.latest_calibration(conn).visitors
    calibrated = None if live is None else live["people"] * k
    dashboard = served["people"] if served else raw["now_in_store"]
    day = next((d for d in truth["days"] if d["open"] <= t <= d["close"]), None)
    return {
        "now_truth": inside,
        "now_open": day is not None,
        "now_dashboard": dashboard,
        "now_presence_calibrated": calibrated,
        "now_presence_1min": None if one_minute is None else one_minute["people"] * k,
        "now_occupancy": occ["people"] if occ else None,
        "now_presence_raw": raw["now_in_store"] if raw["source"] == "presence" else None,
    }


def cmd_live(seeds_text: str, workdir: str | None, dwell_scale: float = 1.0) -> int:
    """``dwell_scale``: visits that many times as long (a dealership's people present, whose
    phones of one model are inside together for an hour)."""
    seeds = parse_seeds(seeds_text)
    try:
        check_dwell_scale(dwell_scale)
    except ValueError as e:
        raise ValueError(f"--dwell-scale: {e}") from None
    with tempfile.TemporaryDirectory(prefix="footfall-live-") as tmp:
        base = Path(workdir or tmp)
        for seed in seeds:
            sc = replace(scenario(seed), dwell_scale=dwell_scale)
            if sc.days < 2:  # a store with history: its day's model is fitted on earlier days
                sc = replace(sc, days=2)
            r = evaluate_live(sc, base)
            print(f"{sc.name} -- live replay of {r.day}, the link job every 15 min ({r.steps} runs)")
            for row in r.rows:
                cap = row["capture_rate"]
                print(
                    f"  {row['clock']}  visitors {row['visitors'] or 0:7.1f}  passers-by {row['passersby'] or 0:7.1f}"
                    f"  capture {'-' if cap is None else f'{100 * cap:.1f}%'}"
                )
            print(
                f"  largest revision of settled hours: passers-by {100 * r.max_passersby_revision:.2f} %, visitors "
                f"{100 * r.max_visitors_revision:.2f} %, capture rate {r.max_capture_revision_pts:.2f} points; "
                f"today's totals went down {r.backward_moves} times"
                + (f" ({'; '.join(r.backward)})" if r.backward else "")
                + f"; the people shown went down {r.backward_shown} times, {len(r.revisions)} revisions recorded"
            )
            m = r.now_mae
            print(
                f"  now in store, every minute while open (truth: {m.get('truth_mean', 0):.1f} people inside on "
                f"average), mean "
                f"absolute error: dashboard {m.get('now_dashboard', float('nan')):.2f}, presence x site ratio "
                f"{m.get('now_presence_calibrated', float('nan')):.2f} (from one minute's count "
                f"{m.get('now_presence_1min', float('nan')):.2f}), latest estimated minute "
                f"{m.get('now_occupancy', float('nan')):.2f}, raw presence count "
                f"{m.get('now_presence_raw', float('nan')):.2f}"
            )
    return 0
