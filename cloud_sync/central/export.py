"""Export of a segment version: data-supplier CSV (seed 000) and generic CSV / JSON.

**Data-supplier format** (an ad platform's "contact list" upload): a CSV whose only column
is headed ``msisdn``, one MD5 phone hash per line, each file under 100 MB (we split at
``max_bytes``, every part with its own header), and more than 5,000 people for the platform to
accept it ("более 5 000 клиентов": exactly 5,000 is refused too): fewer gives a warning, not
an error, because the operator may still want the file for a partner with a lower threshold.

Only profiles with an active ``phone_md5`` identifier **and** a recorded personal-data
consent are exported; the hash is read at export time, so a consent withdrawn after the
recount is honoured. The generic formats carry pseudonymous profile facts, and the phone
hash only under the same rule.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall.cloud_sync.central import segments
from footfall.cloud_sync.central.db import Connection

SUPPLIER_MIN_MEMBERS = 5000
# "Не должен превышать 100 МБ": stay clear of the limit whichever megabyte the platform means.
SUPPLIER_MAX_BYTES = 99_000_000
FORMATS = ("msisdn", "csv", "json")
_CHUNK = 500


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    count: int = 0
    warnings: list[str] = field(default_factory=list)


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def consented_phones(conn: Connection, devices: Sequence[str]) -> dict[str, str]:
    """device -> active phone MD5, for devices with a personal-data consent on record."""
    out: dict[str, str] = {}
    for chunk in _chunks(devices):
        marks = ", ".join("?" * len(chunk))
        for device, value in conn.all(
            "SELECT i.device, i.value FROM identifiers i JOIN consents c ON c.device = i.device AND c.pd_consent = 1 "
            f"WHERE i.type = 'phone_md5' AND i.active = 1 AND i.device IN ({marks}) "
            "AND NOT EXISTS (SELECT 1 FROM optouts o WHERE o.device = i.device)",
            chunk,
        ):
            out[device] = value
    return out


def supplier_csv(
    conn: Connection,
    segment_id: str,
    out_dir: str | Path,
    *,
    version: int | None = None,
    max_bytes: int = SUPPLIER_MAX_BYTES,
    min_members: int = SUPPLIER_MIN_MEMBERS,
) -> ExportResult:
    """Write ``<segment>_<part>.csv`` files of MD5 phone hashes under ``max_bytes`` each."""
    header = b"msisdn\n"
    if max_bytes < len(header) + 33:
        raise ValueError("max_bytes too small for one line")
    phones = sorted(set(consented_phones(conn, segments.members(conn, segment_id, version)).values()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(count=len(phones))
    part, buf = 0, bytearray(header)

    def flush() -> None:
        nonlocal part, buf
        part += 1
        path = out / f"{segment_id}_{part:03d}.csv"
        path.write_bytes(bytes(buf))
        result.files.append(path)
        buf = bytearray(header)

    for phone in phones:
        line = phone.encode() + b"\n"
        if len(buf) + len(line) > max_bytes:
            flush()
        buf += line
    if phones or not result.files:
        flush()
    if len(phones) <= min_members:
        result.warnings.append(
            f"segment {segment_id!r} has {len(phones)} consented phone hashes; the platform needs more than "
            f"{min_members} to accept a list"
        )
    return result


def profile_rows(
    conn: Connection,
    segment_id: str,
    *,
    version: int | None = None,
    stores: Sequence[str] | None = None,
    include_phone: bool = True,
) -> list[dict[str, Any]]:
    """One dict per member: chain-wide (or ``stores``-limited) facts, phone hash only with consent."""
    devices = segments.members(conn, segment_id, version)
    phones = consented_phones(conn, devices) if include_phone else {}
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(devices):
        marks = ", ".join("?" * len(chunk))
        params: list[Any] = list(chunk)
        scope = ""
        if stores:
            scope = f" AND store IN ({', '.join('?' * len(stores))})"
            params += list(stores)
        per: dict[str, list[tuple]] = {}
        for r in conn.all(
            "SELECT device, store, first_seen, last_seen, visits, dwell_s, cluster FROM profile_stores "
            f"WHERE device IN ({marks}){scope} ORDER BY device, store",
            params,
        ):
            per.setdefault(r[0], []).append(r)
        for device in chunk:
            items = per.get(device, [])
            if not items:
                continue
            row = {
                "device": device,
                "stores": [r[1] for r in items],
                "first_seen": min(r[2] for r in items),
                "last_seen": max(r[3] for r in items),
                "visits": sum(r[4] for r in items),
                "dwell_s": round(sum(r[5] for r in items), 1),
                "clusters": sorted({r[6] for r in items if r[6]}),
            }
            if device in phones:
                row["phone_md5"] = phones[device]
            rows.append(row)
    return rows


def generic(
    conn: Connection,
    segment_id: str,
    fmt: str,
    *,
    version: int | None = None,
    stores: Sequence[str] | None = None,
) -> str:
    """The segment as CSV (lists joined with ``|``) or JSON text."""
    rows = profile_rows(conn, segment_id, version=version, stores=stores)
    if fmt == "json":
        return json.dumps({"segment": segment_id, "count": len(rows), "profiles": rows}, ensure_ascii=False)
    if fmt != "csv":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    buf = io.StringIO()
    cols = ["device", "stores", "first_seen", "last_seen", "visits", "dwell_s", "clusters", "phone_md5"]
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "stores": "|".join(row["stores"]), "clusters": "|".join(row["clusters"])})
    return buf.getvalue()
