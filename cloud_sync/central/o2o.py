"""O2O results across stores, and the register of every export the centre makes.

**Results.** Each hub reports every scenario's local days (``cloud_sync/o2o_results.py``:
the cohort of targets assigned that day, followed to now). A period here is a range of those
days; per store and scenario (and per scenario over the chain) the counts and money are
added up and the ratios recomputed from the sums:

- reach = ``eligible`` (targets, control group excluded), ``control``, ``matched`` (known to
  the partner), ``match_rate`` = matched / sent_to_partner, ``sent`` = SMS queued
  (``messaged``), ``segment`` (handed to the ad platform), ``redeemed`` coupons, ``revenue``;
- ``costs`` = discounts + partner charges (matched x price_match + SMS x price_sms) + the
  scenario's fixed cost once per store and period; ``romi`` = (revenue x margin - costs) /
  costs, as the hub computes it;
- ``uplift`` = return rate of the treated - return rate of the control group, each from the
  summed counts (``returned_treated / eligible``), ``incremental_visits`` = uplift x eligible;
- ``invoice`` = what the partner bills for the period: matches and SMS made on its days (event
  time, as the partner counts; a cohort's ``partner_cost`` may fall on the next day's bill).

**Exports register.** Every file or push the centre makes of a segment (data-supplier CSV,
generic CSV / JSON, CDP push) is recorded: when, who, segment and version, format, rows,
bytes, SHA-256, and the warning it carried. ``GET /api/v1/exports``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from footfall.cloud_sync.central.db import Connection

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SUMS = (
    "eligible", "control", "sent_to_partner", "matched", "messageable", "messaged", "segment", "blocked",
    "coupons_issued", "coupons_redeemed", "revenue", "return_value", "discount_cost", "partner_cost",
    "returned_treated", "returned_messaged", "returned_control", "billed_matched", "billed_sms", "invoice",
)  # fmt: skip
COLUMNS = (
    "store", "scenario", "start_day", "end_day", "days", "eligible", "control", "matched", "match_rate", "messaged",
    "segment", "coupons_redeemed", "redemption_rate", "revenue", "costs", "romi", "return_rate_treated",
    "return_rate_control", "uplift", "incremental_visits", "invoice",
)  # fmt: skip
EXPORT_COLUMNS = ("id", "ts", "who", "segment", "version", "format", "rows", "bytes", "sha256", "files", "warning")


def _num(v: Any) -> float:
    """A count or amount from a hub's record; anything else (text, NaN, 1e400) counts as 0, so
    one hub's bad record never breaks the page for every store."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0.0
    try:
        f = float(v)
    except OverflowError:
        return 0.0
    return f if math.isfinite(f) and abs(f) < 1e15 else 0.0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def check_day(text: str | None, name: str) -> str:
    if text is None or not _DAY.match(text):
        raise ValueError(f"{name} must be a day, YYYY-MM-DD")
    dt.date.fromisoformat(text)
    return text


def _finish(acc: dict[str, Any]) -> dict[str, Any]:
    s = acc["sums"]
    costs = round(s["discount_cost"] + s["partner_cost"] + acc["fixed_cost"], 2)
    rate_t, rate_c = _ratio(s["returned_treated"], s["eligible"]), _ratio(s["returned_control"], s["control"])
    uplift = round(rate_t - rate_c, 4) if rate_t is not None and rate_c is not None else None
    return {
        "store": acc["store"],
        "scenario": acc["scenario"],
        "start_day": acc["start_day"],
        "end_day": acc["end_day"],
        "days": len(acc["days"]),
        **{k: round(v, 2) if isinstance(v, float) and not v.is_integer() else int(v) for k, v in s.items()},
        "match_rate": _ratio(s["matched"], s["sent_to_partner"]),
        "redemption_rate": _ratio(s["coupons_redeemed"], s["messaged"]),
        "costs": costs,
        "romi": round((s["return_value"] - costs) / costs, 3) if costs > 0 else None,
        "return_rate_treated": rate_t,
        "return_rate_control": rate_c,
        "uplift": uplift,
        "incremental_visits": round(uplift * s["eligible"], 1) if uplift is not None else None,
        "invoice": round(s["invoice"], 2),
    }


def results(
    conn: Connection, start_day: str, end_day: str, stores: Sequence[str] | None, scenario: str | None = None
) -> dict[str, Any]:
    """Per (store, scenario) and per scenario over the visible stores, for local days
    ``start_day`` to ``end_day`` inclusive."""
    check_day(start_day, "start"), check_day(end_day, "end")
    if end_day < start_day:
        raise ValueError("end is before start")
    rows = conn.all(
        "SELECT store, scenario, period, data FROM scenario_results WHERE period >= ? AND period <= ? ORDER BY store, "
        "scenario, period",
        (f"day:{start_day}", f"day:{end_day}"),
    )
    per: dict[tuple[str, str], dict[str, Any]] = {}

    def acc_for(store: str, name: str) -> dict[str, Any]:
        return per.setdefault(
            (store, name),
            {"store": store, "scenario": name, "start_day": start_day, "end_day": end_day, "days": set(),
             "sums": dict.fromkeys(_SUMS, 0.0), "fixed": {}},
        )  # fmt: skip

    for store, name, period, text in rows:
        if (stores is not None and store not in stores) or (scenario is not None and name != scenario):
            continue
        data = json.loads(text)
        for acc in (acc_for(store, name), acc_for("*", name)):
            acc["days"].add(period)
            for k in _SUMS:
                acc["sums"][k] += _num(data.get(k))
            if "return_value" not in data:  # a hub before margins were reported: revenue-based
                acc["sums"]["return_value"] += _num(data.get("revenue"))
            if "invoice" not in data:  # nor the bill by event time: the cohort's charges
                acc["sums"]["invoice"] += _num(data.get("partner_cost"))
            acc["fixed"][store] = max(acc["fixed"].get(store, 0.0), _num(data.get("fixed_cost")))
    out_rows, totals = [], []
    for (store, _name), acc in per.items():
        acc["fixed_cost"] = sum(acc["fixed"].values())
        (totals if store == "*" else out_rows).append(_finish(acc))
    return {"start_day": start_day, "end_day": end_day, "rows": out_rows, "totals": totals}


def to_csv(rows: list[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """Always the header line (a header alone reads as "no rows" in a spreadsheet)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# -- the register of the centre's exports ------------------------------------------------------


def record_export(
    conn: Connection,
    *,
    who: str,
    segment: str,
    version: int | None,
    fmt: str,
    rows: int,
    payload: bytes | None = None,
    files: int = 1,
    warning: str | None = None,
    now: float | None = None,
) -> None:
    conn.execute(
        "INSERT INTO central_exports (ts, who, segment, version, format, rows, bytes, sha256, files, warning) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            time.time() if now is None else now,
            who,
            segment,
            version,
            fmt,
            rows,
            None if payload is None else len(payload),
            None if payload is None else hashlib.sha256(payload).hexdigest(),
            files,
            warning,
        ),
    )


def exports(conn: Connection, segments_visible: set[str] | None, limit: int = 1000) -> list[dict[str, Any]]:
    rows = conn.dicts(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM central_exports ORDER BY id DESC LIMIT ?", (limit,))
    return [r for r in rows if segments_visible is None or r["segment"] in segments_visible]
