"""O2O attribution and reports: per scenario and period, what it cost and what it brought.

A report covers the **targets assigned in the period** (a cohort) and follows them up to now:

``eligible``        devices targeted (control group excluded); ``control`` the held-out ones
``sent_to_partner`` targets whose hash the partner answered for; ``matched`` the ones it knew
                    (``match_rate`` = matched / sent_to_partner); ``messaged`` SMS it queued
``segment``         known to the partner but not messageable: the ad-platform segment
``coupons_issued`` / ``coupons_redeemed`` (cancelled redemptions do not count)
``revenue``         receipt amounts of the redemptions (a redemption = a sale attributed to
                    its scenario); ``discount_cost`` the discounts granted
``partner_cost``    matched x ``price_match`` + messaged x ``price_sms``
``costs``           discount_cost + partner_cost + ``fixed_cost``
``ROMI``            (revenue x ``margin`` - costs) / costs; with the default margin 1.0 this is
                    revenue-based ROMI, as in seed 004 (22.2 for the dwell-time scenario, 0.7
                    for passers-by); set ``margin`` to the gross margin for a profit-based one
``returned``        targets with a store visit (class visitor, not staff; found by device key,
                    the MAC MD5 being keyed once the target is done) within
                    ``attribution_days`` after assignment: for the treated (all eligible,
                    intention to treat), the messaged and the control group
``uplift``          return rate treated - return rate control; ``incremental_visits`` = uplift
                    x eligible (the visits the scenario added over doing nothing)

The period is whole local days in the store's zone (``tz``). Machine-readable times stay
zone-free: ``start``/``end`` are UNIX seconds and ``start_utc``/``end_utc`` the same instants
as ISO 8601 UTC (``...Z``); only the HTML page prints store time.
"""

from __future__ import annotations

import csv
import html
import io
import time
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from footfall.hub import localtime
from footfall.hub.o2o import register
from footfall.hub.o2o.scenarios import Scenario

DAY = 86400.0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def romi(revenue: float, costs: float, margin: float = 1.0) -> float | None:
    """(revenue x margin - costs) / costs; None when nothing was spent."""
    return round((revenue * margin - costs) / costs, 3) if costs > 0 else None


def zone_name(tz: str | tzinfo | None) -> str:
    """The IANA name (``Europe/Moscow``) an integrator can hand to any tz library."""
    zone = localtime._tz(tz)
    return getattr(zone, "key", None) or str(zone)


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_fields(start: float, end: float, tz: str | tzinfo | None) -> dict[str, Any]:
    """A period as the JSON and CSV carry it: UNIX bounds, the same as UTC ISO, and the zone
    whose local days they bound (an integrator should not have to guess the zone)."""
    return {"tz": zone_name(tz), "start": start, "end": end, "start_utc": utc_iso(start), "end_utc": utc_iso(end)}


def _returned(conn: Any, sc_id: int, start: float, end: float, status_sql: str, since_col: str, days: float) -> int:
    return conn.execute(
        f"SELECT count(*) FROM o2o_targets t WHERE t.scenario_id = ? AND t.assigned_at >= ? AND t.assigned_at < ?"
        f" AND {status_sql} AND EXISTS (SELECT 1 FROM visits v WHERE v.device_key = t.device_key"
        f" AND v.class = 'visitor' AND v.excluded = 0 AND v.first_seen > t.{since_col}"
        f" AND v.first_seen <= t.{since_col} + ?)",
        (sc_id, start, end, days * DAY),
    ).fetchone()[0]


def scenario_report(
    conn: Any, sc: Scenario, start: float, end: float, *, tz: str | tzinfo | None = "UTC"
) -> dict[str, Any]:
    q = conn.execute(
        "SELECT total(status != 'control'), total(status = 'control'), total(sent_at IS NOT NULL),"
        " total(known = 1), total(known = 1 AND messageable = 1), total(message_id IS NOT NULL),"
        " total(status = 'segment'), total(status = 'blocked'), total(status = 'pending'), total(status = 'expired')"
        " FROM o2o_targets WHERE scenario_id = ? AND assigned_at >= ? AND assigned_at < ?",
        (sc.id, start, end),
    ).fetchone()
    eligible, control, sent, matched, messageable, messaged, segment, blocked, pending, expired = (int(x) for x in q)
    cq = conn.execute(
        "SELECT count(*), total(c.redeemed_at IS NOT NULL), total(c.amount), total(c.discount)"
        " FROM o2o_coupons c JOIN o2o_targets t ON t.id = c.target_id"
        " WHERE c.scenario_id = ? AND t.assigned_at >= ? AND t.assigned_at < ?",
        (sc.id, start, end),
    ).fetchone()
    issued, redeemed, revenue, discount = int(cq[0]), int(cq[1]), round(cq[2], 2), round(cq[3], 2)
    partner_cost = round(matched * sc.price_match + messaged * sc.price_sms, 2)
    costs = round(discount + partner_cost + sc.fixed_cost, 2)
    days = sc.attribution_days
    ret_treated = _returned(conn, sc.id, start, end, "t.status != 'control'", "assigned_at", days)
    ret_messaged = _returned(conn, sc.id, start, end, "t.message_id IS NOT NULL", "messaged_at", days)
    ret_control = _returned(conn, sc.id, start, end, "t.status = 'control'", "assigned_at", days)
    rate_t, rate_c = _ratio(ret_treated, eligible), _ratio(ret_control, control)
    uplift = round(rate_t - rate_c, 4) if rate_t is not None and rate_c is not None else None
    return {
        "scenario": sc.name,
        "scenario_id": sc.id,
        "target": sc.target,
        "start": start,
        "end": end,
        "eligible": eligible,
        "control": control,
        "sent_to_partner": sent,
        "matched": matched,
        "match_rate": _ratio(matched, sent),
        "messageable": messageable,
        "messaged": messaged,
        "segment": segment,
        "blocked": blocked,
        "pending": pending,
        "expired": expired,
        "coupons_issued": issued,
        "coupons_redeemed": redeemed,
        "redemption_rate": _ratio(redeemed, messaged),
        "revenue": revenue,
        "discount_cost": discount,
        "partner_cost": partner_cost,
        "fixed_cost": sc.fixed_cost,
        "costs": costs,
        "romi": romi(revenue, costs, sc.margin),
        "returned_treated": ret_treated,
        "returned_messaged": ret_messaged,
        "returned_control": ret_control,
        "return_rate_treated": rate_t,
        "return_rate_control": rate_c,
        "uplift": uplift,
        "incremental_visits": round(uplift * eligible, 1) if uplift is not None else None,
        # Last, so CSV readers that go by column position keep working.
        "tz": zone_name(tz),
        "start_utc": utc_iso(start),
        "end_utc": utc_iso(end),
    }


def report(
    conn: Any, start: float, end: float, scenario: str | None = None, *, tz: str | tzinfo | None = "UTC"
) -> list[dict[str, Any]]:
    """Every scenario's report for targets assigned in [start, end); ``tz`` names the zone whose
    local days the period is (it labels the rows, the bounds are already UNIX seconds)."""
    rows = conn.execute("SELECT * FROM o2o_scenarios ORDER BY id").fetchall()
    out = []
    for row in rows:
        sc = Scenario.from_row(row)
        if scenario is None or sc.name == scenario:
            out.append(scenario_report(conn, sc, start, end, tz=tz))
    return out


# scenario_report's keys, in order: the CSV header when a period has no scenario to report
# (a spreadsheet import of a 0-byte file fails; a header alone reads as "no rows").
REPORT_COLUMNS = (
    "scenario", "scenario_id", "target", "start", "end", "eligible", "control", "sent_to_partner", "matched",
    "match_rate", "messageable", "messaged", "segment", "blocked", "pending", "expired", "coupons_issued",
    "coupons_redeemed", "redemption_rate", "revenue", "discount_cost", "partner_cost", "fixed_cost", "costs",
    "romi", "returned_treated", "returned_messaged", "returned_control", "return_rate_treated",
    "return_rate_control", "uplift", "incremental_visits", "tz", "start_utc", "end_utc",
)  # fmt: skip


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The report as CSV: always the header line, then one row per scenario."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else list(REPORT_COLUMNS))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def partner_invoice(conn: Any, start: float, end: float, recipient: str = "partner") -> dict[str, Any]:
    """The partner's bill for the period (event times), priced per scenario, with the register."""
    lines = []
    for row in conn.execute("SELECT * FROM o2o_scenarios ORDER BY id").fetchall():
        sc = Scenario.from_row(row)
        matched, sms = conn.execute(
            "SELECT total(known = 1 AND matched_at >= ? AND matched_at < ?),"
            " total(message_id IS NOT NULL AND messaged_at >= ? AND messaged_at < ?)"
            " FROM o2o_targets WHERE scenario_id = ?",
            (start, end, start, end, sc.id),
        ).fetchone()
        matched, sms = int(matched), int(sms)
        lines.append(
            {
                "scenario": sc.name,
                "matched": matched,
                "price_match": sc.price_match,
                "sms": sms,
                "price_sms": sc.price_sms,
                "amount": round(matched * sc.price_match + sms * sc.price_sms, 2),
            }
        )
    transfers = register.summary(conn, start, end)
    hashes_sent = sum(t["hashes"] for t in transfers if t["recipient"] == recipient and t["kind"] == "match"
                      and t["status"] == "ok")  # fmt: skip
    return {
        "recipient": recipient,
        "start": start,
        "end": end,
        "lines": lines,
        "matched": sum(x["matched"] for x in lines),
        "sms": sum(x["sms"] for x in lines),
        "hashes_sent": hashes_sent,
        "total": round(sum(x["amount"] for x in lines), 2),
        "transfers": transfers,
    }


def _when(ts: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


def html_page(
    rows: list[dict[str, Any]],
    invoice: dict[str, Any],
    *,
    tz: str | tzinfo | None = "UTC",
    days: tuple[date, date] | None = None,
    now: float | None = None,
) -> str:
    """A plain dashboard page (no scripts) for the O2O results; served at ``/o2o``.

    Like the dashboard, every time is the store's (``tz``) and the header names the zone once,
    so no time on the page carries a zone of its own. ``days``: the period's first and last
    local day (default: read from the invoice's bounds).
    """
    zone = localtime._tz(tz)
    if days is None:
        # end is the next local midnight: one second before it is the last day.
        days = (datetime.fromtimestamp(invoice["start"], zone).date(),
                datetime.fromtimestamp(invoice["end"], zone).date() - timedelta(days=1))  # fmt: skip
    first, last = (d.isoformat() for d in days)
    cols = ["scenario", "eligible", "control", "sent_to_partner", "matched", "match_rate", "messaged",
            "segment", "coupons_issued", "coupons_redeemed", "revenue", "discount_cost", "partner_cost", "romi",
            "return_rate_treated", "return_rate_control", "incremental_visits"]  # fmt: skip
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if r[c] is None else str(r[c]))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    inv = "".join(
        f"<tr><td>{html.escape(x['scenario'])}</td><td>{x['matched']}</td><td>{x['sms']}</td><td>{x['amount']}</td></tr>"
        for x in invoice["lines"]
    )
    period = first if first == last else f"{first} – {last}"
    csv_link = html.escape(f"/api/o2o/report?start={first}&end={last}&format=csv", quote=True)
    generated = _when(time.time() if now is None else now, zone)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Footfall · O2O retargeting</title>"
        "<link rel='stylesheet' href='/static/style.css'></head><body>"
        "<header class='topbar'><div class='brand'>Footfall <span class='muted'>O2O report</span></div>"
        "<div class='status'><span id='store-tz' class='muted' title=\"Every time on this page is the store's"
        f' local time">store time: {html.escape(zone_name(zone))}</span>'
        "<a href='/' class='link'>Dashboard</a></div></header><main>"
        f"<h1>O2O retargeting</h1><p>Targets assigned {html.escape(period)} (whole days, store time)."
        " ROMI = (revenue × margin − costs) / costs; "
        "costs = discounts + partner (per match and per SMS) + fixed.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Partner invoice ({html.escape(invoice['recipient'])})</h2>"
        "<table><thead><tr><th>scenario</th><th>matched</th><th>sms</th><th>amount</th></tr></thead>"
        f"<tbody>{inv}</tbody></table><p>Total {invoice['total']}</p>"
        f"<p>Generated {html.escape(generated)}. <a href='{csv_link}'>CSV</a></p>"
        "</main></body></html>"
    )
