"""Store and undo the site's calibration (``footfall calibrate counts``, ``--undo``, ``--clear``).

The factors go to the ``calibrations`` table; ``hub/figures.py`` applies the latest row when it
reads the estimates, to every day at once. The estimates are stored uncalibrated, so a new
calibration replaces the previous one instead of compounding it, and removing it undoes it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from typing import Any


def latest(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The calibration in force (the latest row), or None."""
    row = conn.execute(
        "SELECT id, created, visitors, passersby, source FROM calibrations ORDER BY created DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {"id": row[0], "created": row[1], "visitors": row[2], "passersby": row[3], "source": row[4]}


def store_calibration(conn: sqlite3.Connection, report: Mapping[str, Any], *, now: float | None = None) -> int:
    """Store the report's factors as the site's calibration (the latest applies); returns its id."""
    factors = report["factors"]
    created = time.time() if now is None else now
    # The latest by ``created`` applies: never store one older than the one in force.
    prev = conn.execute("SELECT max(created) FROM calibrations").fetchone()[0]
    if prev is not None and created <= prev:
        created = prev + 1e-3
    with conn:
        cur = conn.execute(
            "INSERT INTO calibrations (created, visitors, passersby, source, fit) VALUES (?, ?, ?, ?, ?)",
            (
                created,
                float(factors.get("visitors", 1.0)),
                float(factors.get("passersby", 1.0)),
                str(report.get("source", "")),
                json.dumps(report),
            ),
        )
    return int(cur.lastrowid)


def clear_calibrations(conn: sqlite3.Connection, *, latest_only: bool = False) -> int:
    """Remove every calibration (the defaults apply again), or only the latest (the one before
    it applies again). Returns the number of rows removed."""
    with conn:
        if latest_only:
            cur = conn.execute(
                "DELETE FROM calibrations WHERE id = "
                "(SELECT id FROM calibrations ORDER BY created DESC, id DESC LIMIT 1)"
            )
        else:
            cur = conn.execute("DELETE FROM calibrations")
    return cur.rowcount
