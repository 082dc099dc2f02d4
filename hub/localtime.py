"""The store's local day and hour: every report is by local day and hour, in the store's time zone.

Times are stored as UNIX seconds (UTC); these turn them into the store's wall clock.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from zoneinfo import ZoneInfo


def _tz(tz: str | tzinfo | None) -> tzinfo:
    if tz is None or tz == "":
        return ZoneInfo("UTC")
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def local_today(now: float, tz: str | tzinfo | None) -> date:
    return datetime.fromtimestamp(now, _tz(tz)).date()


def local_hour(now: float, tz: str | tzinfo | None) -> int:
    return datetime.fromtimestamp(now, _tz(tz)).hour
