"""The one MQTT topic tree every part of Footfall speaks.

    footfall/<site>/<sensor>/status    retained; "online" JSON, or the last-will "offline"
    footfall/<site>/<sensor>/health    periodic sensor health (rates, drops, backlog, temperature)
    footfall/<site>/<sensor>/visit     one closed visit of one device (QoS 1, the valuable data)
    footfall/<site>/<sensor>/presence  periodic live counts ("now in range")
    footfall/<site>/<sensor>/config    retained; written by the hub, applied by the agent

Site and sensor ids are restricted to ``[A-Za-z0-9_-]`` so that a topic level can never carry
``+``, ``#`` or ``/`` and a broker ACL pattern like ``footfall/<site>/%u/#`` stays exact.
"""

from __future__ import annotations

import re

ROOT = "footfall"
KINDS = ("status", "health", "visit", "presence", "config")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def topic(site: str, sensor: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {KINDS}")
    return f"{ROOT}/{check_id(site, 'site')}/{check_id(sensor, 'sensor')}/{kind}"


def site_filter(site: str) -> str:
    """Subscription filter for every sensor of one site (the hub's subscription)."""
    return f"{ROOT}/{check_id(site, 'site')}/+/+"


def parse(topic_name: str) -> tuple[str, str, str] | None:
    """Split ``footfall/<site>/<sensor>/<kind>``; None when the topic is not ours."""
    parts = topic_name.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[3] not in KINDS:
        return None
    if not (_ID.match(parts[1]) and _ID.match(parts[2])):
        return None
    return parts[1], parts[2], parts[3]
