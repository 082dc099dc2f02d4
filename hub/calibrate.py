"""Calibrate the hub's estimates of people against a real count (``footfall calibrate counts``).

The hub cannot measure everything by radio (``hub/estimate_defaults.py``, :class:`Defaults`): the share
of people whose phone probes, how long a passer-by stays in range, how many visits the tracker
makes of one person. A door counter, or someone counting for a few days, fixes that per site.

1. :func:`read_counts` (``hub/calibrate_counts.py``) reads what counters export: a CSV of
   timestamped people counts (see docs/calibration.md for the format), validated with line
   numbers.
2. :func:`fit_counts` (``hub/calibrate_fit.py``) matches each counted interval with the hub's
   stored estimates (hourly rows of ``estimates``, summed over the interval, partial hours
   prorated linearly), skipping intervals the hub has no settled estimate for, and fits one
   factor per counted figure: the ratio estimator sum(counted) / sum(estimated), with a 90 %
   interval by bootstrapping over days (over intervals when a single day was counted).
3. :func:`store_calibration` (``hub/calibrate_store.py``) stores the factors in
   ``calibrations``; ``hub/figures.py`` applies the latest row when it reads the estimates, to
   every day at once. The estimates are stored uncalibrated, so a new calibration replaces the
   previous one instead of compounding it, and :func:`clear_calibrations` undoes it.

A calibration corrects a per-site bias (the same factor every day). It cannot remove the
day-to-day noise of the estimates: the MAPE after calibration in the report is in-sample and
is the floor of what it can do, not a promise.

This module is the command (:func:`main`, wired in ``edge_agent/cli.py``); :func:`format_report`
(``hub/calibrate_report.py``) prints the report. It re-exports the steps' public names so callers
keep one import, ``footfall.hub.calibrate``, whichever module a step lives in.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from footfall.hub.calibrate_counts import (
    FIGURES,
    LABELS,
    CountRow,
    Counts,
    CountsError,
    get_tz,
    parse_counts,
    parse_time,
    read_counts,
)
from footfall.hub.calibrate_fit import fit_counts
from footfall.hub.calibrate_report import format_report
from footfall.hub.calibrate_store import clear_calibrations, latest, store_calibration

__all__ = [
    "FIGURES",
    "LABELS",
    "CountRow",
    "Counts",
    "CountsError",
    "clear_calibrations",
    "fit_counts",
    "format_report",
    "get_tz",
    "latest",
    "main",
    "parse_counts",
    "parse_time",
    "read_counts",
    "store_calibration",
]


def _resolve(args: Any) -> tuple[str, str]:
    """Database and time zone: flags, then the hub's TOML (--config), then env and defaults."""
    from footfall.hub import config

    cfg = config.load(getattr(args, "config", None))
    db = getattr(args, "db", None) or cfg.db
    tz = getattr(args, "tz", None)
    if not tz:
        tz = cfg.timezone if getattr(args, "config", None) else os.environ.get("FOOTFALL_TZ") or cfg.timezone
    return db, tz


def _fail(args: Any, message: str, errors: Sequence[str] = ()) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "errors": list(errors)}, indent=1))
    else:
        print(f"footfall calibrate counts: {message}", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
    return 1


def main(args: Any) -> int:
    """``footfall calibrate counts``: the arguments come from ``edge_agent/cli.py``."""
    from footfall.hub import config, store

    actions = [a for a in ("truth", "show", "undo", "clear") if getattr(args, a, None)]
    if len(actions) > 1:
        return _fail(
            args, f"give one of --truth, --show, --undo, --clear (not {' and '.join('--' + a for a in actions)})"
        )
    try:
        db, tz_name = _resolve(args)
    except (config.ConfigError, OSError) as exc:
        return _fail(args, f"hub settings: {exc}")
    try:
        tz = get_tz(tz_name)
    except CountsError as exc:
        return _fail(args, str(exc))
    if not Path(db).is_file():
        return _fail(args, f"no hub database at {db} (give --db or --config)")
    try:
        conn = store.connect(db)
    except (sqlite3.Error, RuntimeError) as exc:
        return _fail(args, f"cannot open {db}: {exc}")
    try:
        if args.clear or args.undo:
            n = clear_calibrations(conn, latest_only=args.undo)
            now = latest(conn)
            msg = f"removed {n} calibration{'s' if n != 1 else ''}; " + (
                f"in force now: visitors x{now['visitors']:.3f}, passers-by x{now['passersby']:.3f} ({now['source']})"
                if now
                else "the dashboard shows the uncalibrated estimates (defaults)"
            )
            print(json.dumps({"removed": n, "in_force": now}) if args.json else msg)
            return 0
        if args.show:
            row = conn.execute("SELECT fit FROM calibrations ORDER BY created DESC, id DESC LIMIT 1").fetchone()
            if row is None:
                print(json.dumps(None) if args.json else "no calibration: the dashboard shows the defaults")
                return 0
            report = json.loads(row[0])
            print(json.dumps(report, indent=1) if args.json else format_report(report))
            return 0
        if not args.truth:
            return _fail(args, "give --truth counts.csv (or --show, --undo, --clear)")
        try:
            counts = read_counts(args.truth, tz)
            report = fit_counts(conn, counts, tz)
        except CountsError as exc:
            return _fail(args, exc.args[0], exc.errors)
        if args.dry_run:
            report["stored"] = None
        else:
            report["stored"] = store_calibration(conn, report)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(format_report(report))
            print()
            f = report["factors"]
            if args.dry_run:
                print(
                    f"Dry run: nothing stored (visitors would be x{f['visitors']:.3f}, "
                    f"passers-by x{f['passersby']:.3f})."
                )
            else:
                print(
                    f"Stored as calibration {report['stored']}: the dashboard now shows visitors x{f['visitors']:.3f}, "
                    f"passers-by x{f['passersby']:.3f} on every day. Undo: footfall calibrate counts --undo"
                )
        return 0
    except sqlite3.Error as exc:
        return _fail(args, f"database error: {exc}")
    finally:
        conn.close()
