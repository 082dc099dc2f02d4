"""The figures ``footfall evaluate --metrics`` checks, their bounds, and how each is read off the
simulator's truth and off counting MAC hashes (the naive figure beside every estimate).

``tools/evaluate_metrics.py`` reads the estimates off the dashboard's API and reports; the
truth's side of each figure is here, in one place, so that a figure added to the dashboard gets
its truth, its naive count and its bound together (docs/metrics.md, "How well").
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FIGURES = (
    "visitors",
    "passersby",
    "capture_rate",
    "median_dwell_s",
    "mean_dwell_s",
    "return_rate",
    "unique_visitors",
    "median_dwell_days",
)
# Bounds of the issue: relative error for counts and dwell, absolute points for the return rate.
BOUNDS = {
    "visitors": ("rel", 0.10),
    "passersby": ("rel", 0.10),
    "capture_rate": ("rel", 0.10),
    "median_dwell_s": ("rel", 0.10),
    "mean_dwell_s": ("rel", 0.10),
    "return_rate": ("abs", 0.05),
    "unique_visitors": ("rel", 0.10),
    "median_dwell_days": ("rel", 0.10),
}


@dataclass
class Figure:
    truth: float | None
    estimate: float | None
    low: float | None = None
    high: float | None = None
    heard: float | None = None  # what the hub heard (devices), before any correction
    naive: float | None = None  # distinct MACs (the dumbest rule)

    def error(self, kind: str = "rel") -> float | None:
        return self._off(self.estimate, kind)

    def naive_error(self, kind: str = "rel") -> float | None:
        return self._off(self.naive, kind)

    def _off(self, value: float | None, kind: str) -> float | None:
        """How far ``value`` is from the truth: in its units (``abs``) or relative to it."""
        if self.truth is None or value is None:
            return None
        if kind == "abs":
            return value - self.truth
        return (value - self.truth) / self.truth if self.truth else None

    @property
    def covered(self) -> bool | None:
        if self.truth is None or self.low is None or self.high is None:
            return None
        return self.low <= self.truth <= self.high


def truth_figures(truth: dict[str, Any], day_index: int) -> dict[str, float | None]:
    people = [p for p in truth["people"] if p["day"] == day_index]
    visitors = [p for p in people if p["kind"] == "visitor"]
    passersby = [p for p in people if p["kind"] == "passerby"]
    dwell = [p["dwell_s"] for p in visitors]
    out: dict[str, float | None] = {
        "visitors": len(visitors),
        "passersby": len(passersby),
        "capture_rate": len(visitors) / (len(visitors) + len(passersby)) if people else None,
        "median_dwell_s": statistics.median(dwell) if dwell else None,
        "mean_dwell_s": statistics.mean(dwell) if dwell else None,
        "return_rate": (sum(1 for p in visitors if p["returning"]) / len(visitors)) if day_index and visitors else None,
        # The store's distinct visitors from its first day to this one (the loyalty page's).
        "unique_visitors": len(
            {p["person"] for p in truth["people"] if p["day"] <= day_index and p["kind"] == "visitor"}
        )
        if day_index
        else None,
        # The median visit of the store's days so far (the engagement page over several days).
        "median_dwell_days": statistics.median(
            p["dwell_s"] for p in truth["people"] if p["day"] <= day_index and p["kind"] == "visitor"
        )
        if day_index
        else None,
    }
    return out


def naive_figures(
    visits: Iterable[dict[str, Any]],
    day_start: float,
    day_end: float,
    before: set[str],
    first_start: float | None = None,
) -> dict:
    """Counting MAC hashes: what a system without linking or correction would show
    (``first_start``: the start of the store's first day, for the figures of its days so far)."""
    vis: set[str] = set()
    seen: set[str] = set()
    dwell: list[float] = []
    days_dwell: list[float] = []
    for v in visits:
        if v.get("long_stay"):
            continue
        if first_start is not None and first_start <= v["first_seen"] < day_end and v["class"] == "visitor":
            days_dwell.append(v["dwell_s"])
        if not day_start <= v["first_seen"] < day_end:
            continue
        seen.add(v["device"])
        if v["class"] == "visitor":
            vis.add(v["device"])
            dwell.append(v["dwell_s"])
    pb = seen - vis
    return {
        "visitors": len(vis),
        "passersby": len(pb),
        "capture_rate": len(vis) / len(seen) if seen else None,
        "median_dwell_s": statistics.median(dwell) if dwell else None,
        "mean_dwell_s": statistics.mean(dwell) if dwell else None,
        "return_rate": (len(vis & before) / len(vis)) if vis and before else None,
        "unique_visitors": len(vis | before) if before else None,
        "median_dwell_days": statistics.median(days_dwell) if before and days_dwell else None,
    }
