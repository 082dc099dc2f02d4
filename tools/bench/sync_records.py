"""Realistic hub records for ``bench_sync``: profiles, a store's day in the outbox, hub databases.

A profile is built exactly as the hub builds it (``cloud_sync/profiles.py``), a day as the outbox holds it
after ``enqueue_changes``; each hub gets its own SQLite database and sync settings.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from pathlib import Path
from typing import Any

from footfall.cloud_sync import outbox
from footfall.cloud_sync.config import SyncConfig
from footfall.hub import store

CLUSTERS = ("lunch-time regulars", "quick look-ins under 5 min", "weekend browsers", "evening shoppers")
RULES = ("loyal", "short stay", "lapsed")
ZONES = ("entrance", "floor", "fitting", "checkout")
T0 = 1_790_000_000.0


# -- realistic hub records ---------------------------------------------------------------------


def profile_data(rng: random.Random, device: str, site: str, now: float) -> dict[str, Any]:
    """A profile exactly as the hub builds it (``cloud_sync/profiles.py``): stats, segment memberships
    (a cluster, sometimes rules) and, for about 4 % of devices, the phone hash the partner
    shared with its consent (``consent_source: partner``), or a consent given at the hub."""
    visits = 1 if rng.random() < 0.55 else rng.randint(2, 40)
    first = now - rng.uniform(0, 120 * 86400)
    last = first if visits == 1 else min(now, first + rng.uniform(3600, 60 * 86400))
    dwells = [rng.uniform(60, 1800) for _ in range(min(visits, 8))]
    total = sum(dwells) * visits / len(dwells)
    segs = [("cluster: " + rng.choice(CLUSTERS), "cluster", round(first + 86400, 3))]
    if rng.random() < 0.35:
        segs.append((rng.choice(RULES), "rule", round(last, 3)))
    segs.sort()
    data: dict[str, Any] = {
        "device": device,
        "site": site,
        "randomized": rng.random() < 0.6,
        "first_seen": round(first, 3),
        "last_seen": round(last, 3),
        "visits": visits,
        "dwell_total_s": round(total, 1),
        "dwell_mean_s": round(total / visits, 1),
        "dwell_median_s": round(statistics.median(dwells), 1),
        "cluster": segs[0][0].removeprefix("cluster: ") if segs[0][1] == "cluster" else None,
        "segments": [{"name": n, "kind": k, "since": s} for n, k, s in segs],
        "partner_hash": None,
    }
    r = rng.random()
    if r < 0.03:  # matched by the partner, who shared the phone hash with its consent
        data["phone_md5"] = hashlib.md5(device.encode()).hexdigest()
        data["consent_source"] = "partner"
        data["consent_granted"] = round(last, 3)
    elif r < 0.04:  # consent given at the hub (loyalty sign-up): the partner's MAC hash goes too
        data["partner_hash"] = hashlib.md5(device[::-1].encode()).hexdigest()
        data["phone_md5"] = hashlib.md5(device.encode()).hexdigest()
        data["consent_granted"] = round(last - 3600, 3)
    return data


def devices(rng: random.Random, n: int) -> list[str]:
    return [rng.randbytes(16).hex() for _ in range(n)]


def day_outbox(rng: random.Random, site: str, n_profiles: int, now: float) -> dict[str, list[tuple[str, Any]]]:
    """A store's day as the outbox holds it after ``enqueue_changes``: the profiles of every
    device seen (or changed) that day, the visitor visits as events (about 40 % of devices are
    visitors), segment entries, the closed day and the sensors' health."""
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 86400))
    keys = devices(rng, n_profiles)
    profiles = [(k, profile_data(rng, k, site, now)) for k in keys]
    events = []
    for k, _ in profiles:
        if rng.random() < 0.4:
            start = now - rng.uniform(3600, 86400)
            dwell = round(rng.uniform(60, 1800), 1)
            events.append(
                (
                    f"visit:{k}:{start!r}",
                    {
                        "type": "visit",
                        "device": k,
                        "ts": start,
                        "last_seen": start + dwell,
                        "dwell_s": dwell,
                        "zone": rng.choice(ZONES),
                    },
                )  # fmt: skip
            )
    changes = []
    for k, p in profiles[: n_profiles // 25]:
        seg = p["segments"][-1]
        changes.append(
            (
                f"{seg['name']}|{k}|enter|{seg['since']}",
                {
                    "segment": seg["name"],
                    "segment_kind": seg["kind"],
                    "device": k,
                    "change": "enter",
                    "ts": seg["since"],
                },
            )  # fmt: skip
        )
    visitors = len(events)
    sensors = {f"s{i}": {"messages": rng.randint(5000, 50000), "first": now - 86400, "last": now} for i in (1, 2, 3)}
    daily = {
        "site": site,
        "day": day,
        "visitors": visitors,
        "passersby": n_profiles - visitors,
        "capture_rate": round(visitors / n_profiles, 4),
        "visits": visitors,
        "dwell_total_s": round(sum(e[1]["dwell_s"] for e in events), 1),
        "dwell_mean_s": 600.0,
        "dwell_median_s": 480.0,
        "sensor_health": {"sensors_reporting": 3, "sensors": sensors},
    }
    health = {
        "site": site,
        "ts": now,
        "sensors_total": 3,
        "sensors_stale": 0,
        "sensors_failing": 0,
        "sensors": {s: {"state": "online", "stale": False, "backlog": 0, "version": "1.4"} for s in sensors},
    }
    return {
        "profile": profiles,
        "event": events,
        "segment_change": changes,
        "daily_aggregate": [(f"{site}|{day}", daily)],
        "health": [(site, health)],
    }


def make_hub(path: Path, items: dict[str, list[tuple[str, Any]]]) -> Any:
    conn = store.connect(path)
    with conn:
        for kind, rows in items.items():
            outbox.enqueue_many(conn, kind, rows, now=T0)
    return conn


def hub_config(site: str, db: Path, url: str, batch_records: int, batch_bytes: int) -> SyncConfig:
    return SyncConfig(
        site=site,
        db=str(db),
        url=url,
        allow_http=True,
        batch_records=batch_records,
        batch_bytes=batch_bytes,
        read_timeout_s=120.0,
        backoff_base_s=0.5,
        backoff_cap_s=5.0,
        fleet_report=False,
    )
