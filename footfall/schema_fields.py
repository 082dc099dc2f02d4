"""Each message type's fields: name -> (types, required), per type and visit version.

What ``footfall.schema.validate`` checks a payload against; docs/mqtt.md describes the fields.
"""

from __future__ import annotations

# Field specs: name -> (types, required). bool is checked before int on purpose.
_NUM = (int, float)
_VISIT_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str,), True),
    "site": ((str,), True),
    "sensor": ((str,), True),
    "device": ((str,), True),
    "randomized": ((bool,), True),
    "partner_hash": ((str, type(None)), False),
    "first_seen": (_NUM, True),
    "last_seen": (_NUM, True),
    "dwell_s": (_NUM, True),
    "inside_s": (_NUM, True),
    "sightings": ((int,), True),
    "rssi_max": ((int, type(None)), True),
    "rssi_mean": ((int, float, type(None)), True),
    "class": ((str,), True),
    "long_stay": ((bool,), True),
    "fingerprint": ((str,), True),
    "ie_ids": ((list,), True),
    "seq_first": ((int, type(None)), False),
    "seq_last": ((int, type(None)), False),
    "channels": ((list,), False),
    "closed_by": ((str,), False),
    # Linking evidence for the hub's device estimator (randomized MACs): keyed hashes of the
    # SSIDs the device asked for by name, and its typical gap between probe bursts.
    "ssid_hashes": ((list,), False),
    "burst_gap_s": ((int, float, type(None)), False),
}
# Version 2 adds the evidence per minute and per burst (see payloads.visit_payload and docs/mqtt.md).
_VISIT_V2_ONLY = ("bursts", "burst_offsets", "rssi_minutes")
_VISIT_V2_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    **_VISIT_FIELDS,
    "bursts": ((int,), True),
    "burst_offsets": ((list,), True),
    "rssi_minutes": ((list,), True),
}
VISIT_SPECS = {1: _VISIT_FIELDS, 2: _VISIT_V2_FIELDS}
_PRESENCE_FIELDS = {
    "id": ((str,), True),
    "site": ((str,), True),
    "sensor": ((str,), True),
    "ts": (_NUM, True),
    "window_s": (_NUM, True),
    "devices": ((int,), True),
    "inside": ((int,), True),
}
_STATUS_FIELDS = {
    "site": ((str,), True),
    "sensor": ((str,), True),
    "state": ((str,), True),
    "ts": (_NUM, True),
    "version": ((str,), False),
    "started": (_NUM, False),
}
_HEALTH_FIELDS = {
    "id": ((str,), True),
    "site": ((str,), True),
    "sensor": ((str,), True),
    "ts": (_NUM, True),
    "version": ((str,), True),
    "uptime_s": (_NUM, True),
    "frames": ((int,), True),
    "frames_per_s": (_NUM, True),
    "rejected": ((int,), True),
    "devices_tracked": ((int,), True),
    "backlog": ((int,), True),
    "dropped": ((int,), True),
    "cpu_temp_c": ((int, float, type(None)), False),
    # Newer agents add these; older ones omit them, so they stay optional.
    "optout_dropped": ((int,), False),
    "duplicates": ((int,), False),
    "denied": ((int,), False),
    "held": ((int,), False),
}
_CONFIG_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    # Every key optional: the hub sends only what it changes. The agent knows the rest.
}
# Each type's newest spec; visits of an older version are checked against VISIT_SPECS[v].
SPECS = {
    "visit": _VISIT_V2_FIELDS,
    "presence": _PRESENCE_FIELDS,
    "status": _STATUS_FIELDS,
    "health": _HEALTH_FIELDS,
    "config": _CONFIG_FIELDS,
}
