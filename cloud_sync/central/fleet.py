"""The centre's fleet view: every store's sensors and hub health from their fleet reports.

Each hub sends its fleet report with every sync cycle (``cloud_sync/fleet.py``, protocol in
docs/sync-protocol.md, "Fleet report"). The centre keeps the latest one per store in
``fleet_reports`` (schema migration 2, see ``schema.MIGRATIONS``) and turns them into one view for
the operations team, worst first:

- a sensor is **down** when it is offline, was never seen, or its certificate has expired (it
  cannot connect under mTLS); **silent** when it claims to be up but stopped sending;
  **expiring** when its certificate ends within the warning period;
- a store is in trouble when its report is **stale** (the hub has not reported for
  ``stale_after_s``: every figure of it may be out of date), its MQTT session is down, its CRL
  or its own certificates expire (an expired CRL locks every sensor out), its disk is nearly
  full, a file it watches cannot be read, or its clock is off.

Times in a report are the hub's clock; they are moved onto the centre's by the difference
between the report's ``ts`` and its arrival, so a hub with a wrong clock does not make its live
sensors look dead (the clock offset is shown as a problem of its own). Certificate and CRL
dates are absolute and compared with the centre's clock as they are.

A report that is not what the protocol says is refused whole with the reason (:class:`FleetError`):
a fleet view built from half a report would show sensors as missing that are not.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from footfall.cloud_sync.central.db import Connection

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_reports (
    store {key} PRIMARY KEY,
    received DOUBLE PRECISION NOT NULL,
    hub_ts DOUBLE PRECISION NOT NULL,
    sensors_total INTEGER NOT NULL,
    sensors_down INTEGER NOT NULL,
    report TEXT NOT NULL
)
"""

REPORT_VERSION = 1
STATUSES = ("online", "stale", "offline", "replayed", "never_seen")
DOWN_STATUSES = ("offline", "never_seen")
MAX_SENSORS = 2000
MAX_FILES = 64
MAX_REPORT_BYTES = 512 * 1024  # compressed: a 2,000-sensor report is about a tenth of this
MAX_INFLATED_BYTES = 4 * 1024 * 1024
# Severities, worst first on the page.
DOWN, STALE, EXPIRING, NOTICE, OK = 4, 3, 2, 1, 0
LEVELS = {DOWN: "down", STALE: "stale", EXPIRING: "warning", NOTICE: "notice", OK: "ok"}
CLOCK_TOLERANCE_S = 60.0
_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")
# Roles and error names end up in problem texts and CSV cells: words only, so no cell can start
# a spreadsheet formula and no text can pass for markup.
_WORD = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.: -]{0,63}$")


class FleetError(ValueError):
    """The report breaks the protocol; the message says where."""


# -- validation -------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise FleetError(f"{where} must be an object")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise FleetError(f"{where} must be a list")
    if len(value) > limit:
        raise FleetError(f"{where} has {len(value)} entries, more than {limit}")
    return value


def _number(value: Any, where: str, *, optional: bool = True, low: float = -math.inf) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low:
        raise FleetError(f"{where} must be a number" + (f" >= {low:g}" if low > -math.inf else ""))
    return float(value)


def _time(value: Any, where: str, *, optional: bool = True) -> float | None:
    out = _number(value, where, optional=optional)
    # Unix seconds: anything before 2001 or past 5138 is a unit or encoding error, not a date.
    if out is not None and not 1e9 <= out < 1e11:
        raise FleetError(f"{where} must be unix seconds")
    return out


def _count(value: Any, where: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FleetError(f"{where} must be a whole number >= 0")
    return value


def _flag(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise FleetError(f"{where} must be true, false or null")
    return value


def _text(value: Any, where: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise FleetError(f"{where} must be a string of at most {limit} characters")
    return value


def _word(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _WORD.match(value):
        raise FleetError(f"{where} must be a short word ([0-9A-Za-z_.: -], at most 64)")
    return value


def _ident(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise FleetError(f"{where} must be 1-128 characters of [0-9A-Za-z_.:-]")
    return value


def validate(report: Any, hub: str) -> dict[str, Any]:
    """The report of ``hub`` (the signed hub) reduced to what the protocol defines; FleetError else."""
    r = _obj(report, "the report")
    if r.get("v") != REPORT_VERSION:
        raise FleetError(f"v must be {REPORT_VERSION}")
    if r.get("hub") != hub:
        raise FleetError("hub does not match the signed hub header")
    status = _obj(r.get("hub_status", {}), "hub_status")
    sensors: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(_list(r.get("sensors"), "sensors", MAX_SENSORS)):
        where = f"sensors[{i}]"
        s = _obj(raw, where)
        key = (_ident(s.get("site"), f"{where}.site"), _ident(s.get("sensor"), f"{where}.sensor"))
        if key in seen:
            raise FleetError(f"{where}: sensor {key[0]}/{key[1]} listed twice")
        seen.add(key)
        if s.get("status") not in STATUSES:
            raise FleetError(f"{where}.status must be one of {', '.join(STATUSES)}")
        sensors.append(
            {
                "site": key[0],
                "sensor": key[1],
                "status": s["status"],
                "last_ingest": _time(s.get("last_ingest"), f"{where}.last_ingest"),
                "visits_24h": _count(s.get("visits_24h", 0), f"{where}.visits_24h"),
                "messages": _count(s.get("messages"), f"{where}.messages", optional=True),
                "cert_expiry": _time(s.get("cert_expiry"), f"{where}.cert_expiry"),
                "expected": bool(_flag(s.get("expected"), f"{where}.expected")),
            }
        )
    files: dict[str, list[dict[str, Any]]] = {}
    for name, stamp in (("certificates", "expiry"), ("crls", "next_update")):
        files[name] = []
        for i, raw in enumerate(_list(r.get(name, []), name, MAX_FILES)):
            f = _obj(raw, f"{name}[{i}]")
            files[name].append(
                {
                    "role": _word(f.get("role"), f"{name}[{i}].role") or "file",
                    "file": _text(f.get("file"), f"{name}[{i}].file", 512) or "",
                    stamp: _time(f.get(stamp), f"{name}[{i}].{stamp}"),
                    "error": _word(f.get("error"), f"{name}[{i}].error"),
                }
            )
    return {
        "v": REPORT_VERSION,
        "hub": hub,
        "ts": _time(r.get("ts"), "ts", optional=False),
        "stale_after_s": _number(r.get("stale_after_s"), "stale_after_s", low=0),
        "clock_offset_s": _number(r.get("clock_offset_s"), "clock_offset_s"),
        "hub_status": {
            "last_ingest": _time(status.get("last_ingest"), "hub_status.last_ingest"),
            "ingest_heartbeat": _time(status.get("ingest_heartbeat"), "hub_status.ingest_heartbeat"),
            "mqtt_connected": _flag(status.get("mqtt_connected"), "hub_status.mqtt_connected"),
            "mqtt_changed": _time(status.get("mqtt_changed"), "hub_status.mqtt_changed"),
            **{
                k: _count(status.get(k), f"hub_status.{k}", optional=True)
                for k in ("disk_free_bytes", "disk_size_bytes", "database_bytes")
            },
        },
        "sensors": sensors,
        **files,
        "roster_error": _word(r.get("roster_error"), "roster_error"),
    }


def store_report(conn: Connection, hub: str, report: Mapping[str, Any], *, received: float) -> None:
    """Keep ``report`` as the store's latest (a validated one: see :func:`validate`)."""
    down = sum(s["status"] in DOWN_STATUSES for s in report["sensors"])
    conn.execute(
        "INSERT INTO fleet_reports (store, received, hub_ts, sensors_total, sensors_down, report) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (store) DO UPDATE SET received = excluded.received, "
        "hub_ts = excluded.hub_ts, sensors_total = excluded.sensors_total, sensors_down = excluded.sensors_down, "
        # Arrival order, not the hub's ts: a hub whose clock was set back must not be stuck.
        "report = excluded.report WHERE excluded.received >= fleet_reports.received",
        (hub, received, report["ts"], len(report["sensors"]), down, json.dumps(report, separators=(",", ":"))),
    )


# -- the view ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    stale_after_s: float = 2 * 3600.0  # a report older than this is stale
    warn_s: float = 30 * 86400.0  # a certificate or CRL ending within this is flagged
    disk_low_fraction: float = 0.10
    disk_critical_bytes: int = 1 << 30


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} d"
    return f"{seconds / 3600:.0f} h" if seconds >= 7200 else f"{seconds / 60:.0f} min"


def _expiry(ts: float | None, now: float, warn_s: float, what: str) -> tuple[int, str] | None:
    if ts is None:
        return None
    if ts <= now:
        return DOWN, f"{what} expired {_span(now - ts)} ago"
    if ts - now <= warn_s:
        return EXPIRING, f"{what} expires in {_span(ts - now)}"
    return None


def _worst(problems: Iterable[tuple[int, str]]) -> tuple[int, list[str]]:
    items = sorted(problems, key=lambda p: -p[0])
    return (items[0][0] if items else OK), [text for _, text in items]


def _sensor_row(
    store: str, name: str, s: Mapping[str, Any], shift: float, now: float, stale: tuple[int, str] | None, th: Thresholds
) -> dict[str, Any]:
    problems: list[tuple[int, str]] = []
    if s["status"] == "never_seen":
        problems.append((DOWN, "down: never seen"))
    elif s["status"] == "offline":
        problems.append((DOWN, "down: offline"))
    elif s["status"] == "stale":
        problems.append((STALE, "silent"))
    elif s["status"] == "replayed":
        problems.append((NOTICE, "replayed, not live"))
    cert = _expiry(s["cert_expiry"], now, th.warn_s, "certificate")
    if cert:
        problems.append(cert)
    if stale:
        problems.append(stale)
    severity, texts = _worst(problems)
    last = None if s["last_ingest"] is None else s["last_ingest"] + shift
    return {
        "store": store,
        "store_name": name,
        "site": s["site"],
        "sensor": s["sensor"],
        "status": s["status"],
        "severity": severity,
        "level": LEVELS[severity],
        "problems": texts,
        "last_ingest": last,
        "last_ingest_age_s": None if last is None else round(now - last, 1),
        "visits_24h": s["visits_24h"],
        "messages": s["messages"],
        "cert_expiry": s["cert_expiry"],
        "cert_days_left": None if s["cert_expiry"] is None else round((s["cert_expiry"] - now) / 86400, 2),
        "report_stale": stale is not None,
    }


def _store_row(
    store: str, name: str, rep: Mapping[str, Any] | None, received: float | None, now: float, th: Thresholds
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if rep is None or received is None:
        row = {"store": store, "store_name": name, "severity": STALE, "level": LEVELS[STALE]}
        return row | {"problems": ["no fleet report yet"], "report_received": None, "report_stale": True}, []
    shift = received - rep["ts"]  # hub clock -> centre clock (plus the transit time)
    age = now - received
    stale = None
    if age > th.stale_after_s:
        stale = (STALE, f"report {_span(age)} old")
    problems: list[tuple[int, str]] = [stale] if stale else []
    hs = rep["hub_status"]
    if hs["mqtt_connected"] is False:
        problems.append((DOWN, "MQTT session down"))
    last = None if hs["last_ingest"] is None else hs["last_ingest"] + shift
    silent_after = max(rep["stale_after_s"] or 0.0, 600.0)
    if rep["sensors"] and (last is None or received - last > silent_after):
        problems.append((STALE, "nothing ingested yet" if last is None else f"no ingest for {_span(received - last)}"))
    free, size = hs["disk_free_bytes"], hs["disk_size_bytes"]
    if free is not None and size:
        if free < th.disk_critical_bytes or free < size * th.disk_low_fraction / 2:
            problems.append((DOWN, f"disk nearly full ({free / size:.0%} free)"))
        elif free < size * th.disk_low_fraction:
            problems.append((EXPIRING, f"disk low ({free / size:.0%} free)"))
    expiries: list[float] = []
    for c in rep["crls"]:
        found = _expiry(c["next_update"], now, th.warn_s, f"{c['role']} CRL")
        if found and found[0] == DOWN:
            found = (DOWN, found[1] + ": mTLS refuses every sensor")
        problems += [found] if found else []
        expiries += [c["next_update"]] if c["next_update"] is not None else []
    for c in rep["certificates"]:
        found = _expiry(c["expiry"], now, th.warn_s, f"{c['role']} certificate")
        problems += [found] if found else []
        expiries += [c["expiry"]] if c["expiry"] is not None else []
    for kind, group in (("certificate", rep["certificates"]), ("CRL", rep["crls"])):
        problems += [(STALE, f"{c['role']} {kind} unreadable ({c['error']})") for c in group if c["error"]]
    if rep["roster_error"]:
        problems.append((STALE, f"roster unreadable ({rep['roster_error']})"))
    offset = rep["clock_offset_s"] if rep["clock_offset_s"] else shift
    if abs(offset) > CLOCK_TOLERANCE_S:
        problems.append((EXPIRING, f"hub clock {abs(offset):.0f} s {'behind' if offset > 0 else 'ahead'}"))
    sensors = [_sensor_row(store, name, s, shift, now, stale, th) for s in rep["sensors"]]
    for level, what in ((DOWN, "down"), (EXPIRING, "with a certificate expiring")):
        n = sum(s["severity"] == level for s in sensors)
        if n:
            problems.append((level, f"{n} sensor{'s' * (n > 1)} {what}"))
    severity, texts = _worst(problems)
    crl = [c["next_update"] for c in rep["crls"] if c["next_update"] is not None]
    client = [c["expiry"] for c in rep["certificates"] if c["role"] == "client" and c["expiry"] is not None]
    row = {
        "store": store,
        "store_name": name,
        "severity": severity,
        "problems": texts,
        "report_received": received,
        "report_age_s": round(age, 1),
        "report_stale": stale is not None,
        "clock_offset_s": round(offset, 1),
        "last_ingest": last,
        "last_ingest_age_s": None if last is None else round(now - last, 1),
        "mqtt_connected": hs["mqtt_connected"],
        "disk_free_bytes": free,
        "disk_size_bytes": size,
        "crl_next_update": min(crl, default=None),
        "hub_cert_expiry": min(client or [c["expiry"] for c in rep["certificates"] if c["expiry"]], default=None),
        "first_expiry": min(expiries, default=None),
        "sensors_total": len(sensors),
        "sensors_down": sum(s["severity"] == DOWN for s in sensors),
    }
    row["level"] = LEVELS[row["severity"]]
    # Days left by the centre's clock: the page never does date arithmetic with the browser's.
    for name, left in (("crl_next_update", "crl_days_left"), ("hub_cert_expiry", "hub_cert_days_left")):
        row[left] = None if row[name] is None else round((row[name] - now) / 86400, 2)
    return row, sensors


def _far(value: float | None) -> float:
    return math.inf if value is None else value


def view(conn: Connection, now: float, th: Thresholds, visible: Any = None) -> dict[str, Any]:
    """Every registered store (and any that reported) with its sensors, worst first.

    ``visible(store) -> bool`` limits it to a user's stores."""
    hubs = {h: (n or h) for h, n in conn.all("SELECT hub_id, name FROM hubs WHERE disabled = 0")}
    reports = {r[0]: (r[1], json.loads(r[2])) for r in conn.all("SELECT store, received, report FROM fleet_reports")}
    stores, sensors = [], []
    for store in sorted(set(hubs) | set(reports)):
        if visible is not None and not visible(store):
            continue
        received, rep = reports.get(store, (None, None))
        row, rows = _store_row(store, hubs.get(store, store), rep, received, now, th)
        stores.append(row)
        sensors += rows
    stores.sort(key=lambda r: (-r["severity"], _far(r.get("first_expiry")), r["store"]))
    sensors.sort(
        key=lambda r: (-r["severity"], _far(r["cert_expiry"]), r["last_ingest"] or 0.0, r["store"], r["sensor"])
    )
    return {
        "as_of": now,
        "stale_after_s": th.stale_after_s,
        "warn_days": th.warn_s / 86400,
        "stores": stores,
        "sensors": sensors,
    }


SENSOR_COLUMNS = (
    "store", "store_name", "site", "sensor", "level", "status", "problems", "last_ingest", "last_ingest_age_s",
    "visits_24h", "messages", "cert_expiry", "cert_days_left", "report_stale",
)  # fmt: skip
STORE_COLUMNS = (
    "store", "store_name", "level", "problems", "report_received", "report_age_s", "report_stale", "last_ingest",
    "last_ingest_age_s", "mqtt_connected", "disk_free_bytes", "disk_size_bytes", "crl_next_update",
    "hub_cert_expiry", "clock_offset_s", "sensors_total", "sensors_down",
)  # fmt: skip
_TIMES = {"last_ingest", "cert_expiry", "report_received", "crl_next_update", "hub_cert_expiry"}


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if name in _TIMES:
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, list):
        return "; ".join(value)
    return value


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV with a header, also when there are none; times in ISO 8601 UTC."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(c, row.get(c)) for c in columns])
    return out.getvalue()
