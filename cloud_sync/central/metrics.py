"""The central service's own counters for ``/metrics`` (Prometheus text exposition).

One :class:`Metrics` per app (``app.state.metrics``): the sync routes count batches, records
and refusals into it, ``GET /metrics`` renders it with gauges read from the database; routers
with counters of their own (fleet_web.py) add their families to ``extra``. Counters are per
process.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from footfall.cloud_sync.central.db import Connection


class Metrics:
    """Counters for ``/metrics`` (Prometheus text exposition); gauges are read from the DB."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: Counter[str] = Counter()  # accepted / duplicate
        self.rejected: Counter[str] = Counter()  # by reason
        self.records: Counter[str] = Counter()
        self.pushback = 0
        self._profiles: tuple[float, int] = (0.0, 0)
        # More families from routers of their own (fleet_web.py), rendered after these.
        self.extra: list[Callable[[Connection], list[str]]] = []

    def profiles(self, conn: Connection) -> int:
        # The profile count aggregates the whole profile_stores table: at most once a minute,
        # not at every scrape.
        at, n = self._profiles
        if time.monotonic() - at > 60:
            n = int(conn.scalar("SELECT COUNT(DISTINCT device) FROM profile_stores", default=0))
            self._profiles = (time.monotonic(), n)
        return n

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] += 1

    def render(self, conn: Connection) -> str:
        now = time.time()
        out = [
            "# HELP footfall_central_batches_total Sync batches applied or recognised as duplicates.",
            "# TYPE footfall_central_batches_total counter",
        ]
        with self.lock:
            for result in ("accepted", "duplicate"):
                out.append(f'footfall_central_batches_total{{result="{result}"}} {self.batches[result]}')
            out += [
                "# HELP footfall_central_batches_rejected_total Sync requests rejected, by reason.",
                "# TYPE footfall_central_batches_rejected_total counter",
            ]
            for reason, n in sorted(self.rejected.items()):
                out.append(f'footfall_central_batches_rejected_total{{reason="{reason}"}} {n}')
            out += [
                "# HELP footfall_central_records_total Records of applied batches, by outcome.",
                "# TYPE footfall_central_records_total counter",
            ]
            for outcome, n in sorted(self.records.items()):
                out.append(f'footfall_central_records_total{{outcome="{outcome}"}} {n}')
            out += [
                "# HELP footfall_central_pushback_requests_total Pushback polls answered.",
                "# TYPE footfall_central_pushback_requests_total counter",
                f"footfall_central_pushback_requests_total {self.pushback}",
            ]
        out += [
            "# HELP footfall_central_profiles Chain-wide profiles stored.",
            "# TYPE footfall_central_profiles gauge",
            f"footfall_central_profiles {self.profiles(conn)}",
            "# HELP footfall_central_optouts Devices opted out.",
            "# TYPE footfall_central_optouts gauge",
            f"footfall_central_optouts {conn.scalar('SELECT COUNT(*) FROM optouts', default=0)}",
            "# HELP footfall_central_hub_last_sync_age_seconds Seconds since each hub last synced (-1: never).",
            "# TYPE footfall_central_hub_last_sync_age_seconds gauge",
        ]
        for hub, last in conn.all("SELECT hub_id, last_sync FROM hubs WHERE disabled = 0 ORDER BY hub_id"):
            age = -1 if last is None else round(now - last, 1)
            out.append(f'footfall_central_hub_last_sync_age_seconds{{hub="{hub}"}} {age}')
        for lines in self.extra:
            out += lines(conn)
        return "\n".join(out) + "\n"
