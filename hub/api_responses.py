"""How the API answers: the metrics' JSON as they built it, or a CSV export (``?format=csv``).

Shared by every dashboard area's routes (``hub/api_reports.py``, ``hub/api_health.py``,
``hub/api_segments.py``).
"""

import csv
import io
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, Response
from fastapi.responses import JSONResponse


def _csv_response(rows: list[dict[str, Any]], name: str, fields: Sequence[str] = ()) -> Response:
    """``rows`` as a CSV attachment. The header is every key of the rows in the order they first
    appear (rows of different kinds, e.g. a period's total below its daily rows, share the one
    header; a row leaves the other kinds' columns empty), then any of ``fields`` no row has:
    ``fields`` is the header of an export with no rows, so an empty export is a header line,
    never 0 bytes. Nested values (dicts, lists) are left out."""
    nested = {k for r in rows for k, v in r.items() if isinstance(v, (dict, list))}
    header = [k for k in dict.fromkeys([*(k for r in rows for k in r), *fields]) if k not in nested]
    out = io.StringIO()
    if header:
        writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _json(out: dict[str, Any]) -> JSONResponse:
    """The metrics already return plain JSON-ready dicts shaped like the response models
    (tests check every one against its model): skipping FastAPI's re-validation of
    hundreds of series points is most of a year-long report's time."""
    return JSONResponse(out)


def _format(fmt: str) -> str:
    if fmt not in ("json", "csv"):
        raise HTTPException(400, f"format must be json or csv, got {fmt!r}")
    return fmt
