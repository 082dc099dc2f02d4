"""The calibration fit report as text, for ``footfall calibrate counts`` and its ``--show``."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from footfall.hub.calibrate_counts import LABELS, CountsError, _fmt_local, get_tz
from footfall.hub.calibrate_fit import _rel


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.1f}%" if abs(x) >= 0.0005 else " 0.0%"


def format_report(report: Mapping[str, Any]) -> str:
    """The fit report as text for the terminal."""
    out = [f"Calibration against {report['source']} (time zone {report['tz']})"]
    sk = report["skipped"]
    line = f"  {report['rows']} intervals read, {report['intervals_used']} matched with the hub's estimates"
    skipped = []
    if sk["no_estimate"]:
        skipped.append(f"{sk['no_estimate']} with no estimate")
    if sk["provisional"]:
        wm = report.get("watermark")
        when = ""
        if wm is not None:
            with contextlib.suppress(CountsError):
                when = f" (after {_fmt_local(wm, get_tz(report['tz']))})"
        skipped.append(f"{sk['provisional']} in the hub's provisional period{when}")
    if skipped:
        line += "; skipped " + " and ".join(skipped)
        if sk.get("lines"):
            line += f" (lines {', '.join(map(str, sk['lines'][:10]))}{', ...' if len(sk['lines']) > 10 else ''})"
    out.append(line)
    if report.get("rows_without_count"):
        n = report["rows_without_count"]
        out.append(f"  {n} row{' has' if n == 1 else 's have'} no count and {'was' if n == 1 else 'were'} left out")
    if report.get("assumed_step_s"):
        out.append(f"  rows without an end: up to the next row's start, at most {report['assumed_step_s'] / 60:g} min")
    for fig, f in report["figures"].items():
        out.append("")
        out.append(LABELS[fig])
        out.append(f"  {'day':10} {'counted':>9} {'estimated':>10} {'error':>8} {'calibrated':>11} {'error':>8}")
        for d in f["per_day"]:
            out.append(
                f"  {d['day']:10} {d['truth']:9.0f} {d['estimate']:10.1f} {_pct(d['error_before']):>8} "
                f"{d['calibrated']:11.1f} {_pct(d['error_after']):>8}"
            )
        out.append(
            f"  {'total':10} {f['truth']:9.0f} {f['estimate']:10.1f} {_pct(_rel(f['estimate'], f['truth'])):>8} "
            f"{f['estimate'] * f['factor']:11.1f} {_pct(_rel(f['estimate'] * f['factor'], f['truth'])):>8}"
        )
        mb, ma = f["mape_before"], f["mape_after"]
        if mb is not None and ma is not None:
            out.append(f"  MAPE over days: {100 * mb:.1f} % before, {100 * ma:.1f} % after (in-sample)")
        ci = f"90 % interval {f['low']:.3f}-{f['high']:.3f}" if f["low"] is not None else "no interval"
        out.append(
            f"  factor {f['factor']:.3f} ({ci}, bootstrap over {f['bootstrap_over'] or '-'}), "
            f"from {f['intervals']} intervals on {f['days']} day{'s' if f['days'] != 1 else ''}"
        )
        weight = f.get("weight", 1.0)
        if weight < 0.995:
            out.append(
                f"  (the count alone says {f['fitted']:.3f}; {100 * weight:.0f} % of it is applied: the rest is "
                "within a store's day-to-day wander, so more counted days move it closer)"
            )
    if report.get("warnings"):
        out.append("")
        out.append("Warnings:")
        out += [f"  - {w}" for w in report["warnings"]]
    prev = report.get("replaces")
    if prev:
        out.append("")
        out.append(
            f"In force until now: visitors x{prev['visitors']:.3f}, passers-by x{prev['passersby']:.3f} "
            f"({prev['source']})"
        )
    return "\n".join(out)
