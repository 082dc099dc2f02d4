"""What every part's TOML + environment settings loader shares."""

from __future__ import annotations

import tomllib
import zoneinfo
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from footfall import topics


def check_site(site: str, sensors: Iterable[str], timezone: str, error: type[Exception] = ValueError) -> None:
    """The site id, sensor ids and IANA time zone every hub-side config names."""
    try:
        topics.check_id(site, "site")
        for sensor in sensors:
            topics.check_id(sensor, "sensor")
    except ValueError as exc:
        raise error(str(exc)) from None
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise error(f"timezone {timezone!r} is not a known IANA time zone") from None


def coerce(value: Any, kind: Any, name: str, error: type[Exception] = ValueError) -> Any:
    """Turn a TOML or environment value into a setting's type, or say which setting is wrong."""
    try:
        if kind in (bool, "bool"):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if isinstance(value, bool) and kind not in ("str",):
            raise ValueError(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in (str, "str"):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(value)
            return str(value)
        if kind in (list[str], "list[str]"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
            return list(value)
    except (TypeError, ValueError):
        raise error(f"setting {name!r}: cannot use {value!r} as {kind}") from None
    raise error(f"setting {name!r}: unsupported type {kind}")


def read_toml(path: str | Path | None, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The TOML file as a dict (empty without a path), or ``error`` saying what is wrong with it."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"config file {path}: {exc}") from None


def parse_hours(hours: str | Sequence[float]) -> tuple[float, float]:
    """``"10-21"``, ``"9:30-21:00"`` or ``(10, 21)`` -> (10.0, 21.0)."""
    if isinstance(hours, str):
        try:
            a, b = hours.split("-")
            parsed = []
            for part in (a, b):
                hh, _, mm = part.strip().partition(":")
                parsed.append(int(hh) + (int(mm) if mm else 0) / 60)
        except ValueError as exc:
            raise ValueError(f"opening hours must look like 10-21 or 9:30-21:00, got {hours!r}") from exc
        start, end = parsed
    else:
        start, end = float(hours[0]), float(hours[1])
    if not 0 <= start < end <= 24:
        raise ValueError(f"opening hours must satisfy 0 <= open < close <= 24, got {start}-{end}")
    return start, end
