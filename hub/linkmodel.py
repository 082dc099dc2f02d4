"""How one phone's scans follow each other, measured on the phones the hub can identify.

The tracker (``hub/derandomize.py``) weighs "this sweep continues that device" against "a new
device arrived". The honest weights are the site's own: how long a phone inside waits between
scans, how long visitors stay, how much a phone's RSSI moves from one scan to the next compared
with the difference between two phones. Phones with a globally administered MAC (about one in
five) and the long-lived random MACs of some OSes carry their identity in the clear, so the hub
measures all of that on them (:func:`fit`) and uses it for everyone: a phone's randomization
policy says nothing about how it scans or how long its owner shops.

:data:`DEFAULT` is what :func:`fit` measured on the simulator's tuning seeds (``python -m
footfall.tools.fit_link_model``); a site's own fit replaces it once it has seen enough
identifiable visitors (:func:`blend`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from footfall.hub.sweeps import rssi_difference

# Bins of the gap between two scans of one phone (s) and of an RSSI difference (dB).
GAP_EDGES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0) + tuple(round(3.0 * (1000 / 3.0) ** (i / 29), 2) for i in range(30))
RSSI_EDGES: tuple[float, ...] = tuple(float(x) for x in range(0, 42, 2))
MIN_VISITORS = 30  # identifiable visitors before a site's own measurement counts fully


@dataclass(frozen=True)
class Scan:
    t: float
    rssi: Mapping[str, float]


@dataclass
class LinkModel:
    gap_pdf: tuple[float, ...]  # density (1/s) of the gap to the next scan, per GAP_EDGES bin
    stays: tuple[float, ...]  # sorted visit lengths (s): the survival of a stay
    rssi_ratio: tuple[float, ...]  # P(dRSSI | same phone) / P(dRSSI | another phone), per RSSI_EDGES bin
    sweeps_per_visitor: float
    visitors: int = 0  # identifiable visitors it was measured on
    source: str = ""
    _gap_cdf: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        acc = [0.0]
        for i, p in enumerate(self.gap_pdf):
            acc.append(acc[-1] + p * (GAP_EDGES[i + 1] - GAP_EDGES[i]))
        total = acc[-1] or 1.0
        object.__setattr__(self, "_gap_cdf", tuple(a / total for a in acc))

    def gap_density(self, dt: float) -> float:
        if dt >= GAP_EDGES[-1]:
            return 1e-7
        i = max(bisect.bisect_right(GAP_EDGES, dt) - 1, 0)
        return max(self.gap_pdf[i], 1e-7)

    def gap_cdf(self, dt: float) -> float:
        if dt >= GAP_EDGES[-1]:
            return 1.0
        i = max(bisect.bisect_right(GAP_EDGES, dt) - 1, 0)
        lo, hi = GAP_EDGES[i], GAP_EDGES[i + 1]
        return self._gap_cdf[i] + (self._gap_cdf[i + 1] - self._gap_cdf[i]) * (dt - lo) / (hi - lo)

    def survival(self, t: float) -> float:
        """Share of visits longer than ``t`` seconds."""
        n = len(self.stays)
        if not n:
            return 1.0
        return max((n - bisect.bisect_right(self.stays, t)) / n, 0.5 / n)

    def rssi_lr(self, d: float | None) -> float:
        if d is None:
            return 1.0
        i = min(int(d // (RSSI_EDGES[1] - RSSI_EDGES[0])), len(self.rssi_ratio) - 1)
        return self.rssi_ratio[i]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_gap_cdf", None)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinkModel:
        return cls(
            gap_pdf=tuple(float(x) for x in d["gap_pdf"]),
            stays=tuple(float(x) for x in d["stays"]),
            rssi_ratio=tuple(float(x) for x in d["rssi_ratio"]),
            sweeps_per_visitor=float(d["sweeps_per_visitor"]),
            visitors=int(d.get("visitors", 0)),
            source=str(d.get("source", "")),
        )


def _histogram(values: Iterable[float], edges: Sequence[float]) -> list[float]:
    counts = [0.0] * (len(edges) - 1)
    for v in values:
        i = min(max(bisect.bisect_right(edges, v) - 1, 0), len(counts) - 1)
        counts[i] += 1.0
    return counts


def running_rssi(acc: dict[str, float] | None, rssi: Mapping[str, float], a: float = 0.3) -> dict[str, float]:
    """A phone's running RSSI per key after one more reading (weight ``a`` on the newest, as the
    tracker's ``LinkSettings.rssi_ema``), a new dict."""
    if acc is None:
        return dict(rssi)
    out = dict(acc)
    for k, v in rssi.items():
        out[k] = v if k not in out else out[k] + a * (v - out[k])
    return out


def fit(visits: Sequence[Sequence[Scan]], source: str, max_gap_s: float = 900.0) -> LinkModel:
    """Measure a link model on identified visits (each a time-ordered list of scans inside).

    Gaps between consecutive scans, visit lengths, scans per visit, and RSSI changes of a phone
    (scan vs its running RSSI) against those between phones (a scan vs another visit's running
    RSSI at the same moment). Scans of one phone within the same minute are skipped for RSSI:
    per-minute evidence gives them the same value.
    """
    gaps: list[float] = []
    stays: list[float] = []
    same: list[float] = []
    scans_total = 0
    timeline: list[tuple[float, int, Mapping[str, float]]] = []
    for n, scans in enumerate(visits):
        if not scans:
            continue
        stays.append(scans[-1].t - scans[0].t)
        scans_total += len(scans)
        acc: dict[str, float] | None = None
        for a, b in zip(scans, scans[1:], strict=False):
            if b.t - a.t <= max_gap_s:
                gaps.append(b.t - a.t)
            acc = running_rssi(acc, a.rssi)
            if int(b.t // 60) != int(a.t // 60):
                d = rssi_difference(acc, b.rssi)
                if d is not None:
                    same.append(d)
        timeline += [(s.t, n, s.rssi) for s in scans]
    # Another phone's running RSSI against this scan, at the same moment.
    other: list[float] = []
    timeline.sort(key=lambda x: x[0])
    running: dict[int, tuple[float, dict[str, float]]] = {}
    for t, n, rssi in timeline:
        for m, (tm, acc) in list(running.items()):
            if t - tm > max_gap_s:
                del running[m]
            elif m != n and len(other) < 200_000:
                d = rssi_difference(acc, rssi)
                if d is not None:
                    other.append(d)
        prev = running.get(n)
        running[n] = (t, running_rssi(prev[1] if prev else None, rssi))
    g = _histogram(gaps, GAP_EDGES)
    total = sum(g) or 1.0
    gap_pdf = tuple(c / total / (GAP_EDGES[i + 1] - GAP_EDGES[i]) for i, c in enumerate(g))
    hs, ho = _histogram(same, RSSI_EDGES), _histogram(other, RSSI_EDGES)
    ns, no = sum(hs), sum(ho)
    # Add-half smoothing: a bin nobody fell in says "rare", not "impossible".
    ratio = tuple(
        round(((s + 0.5) / (ns + 0.5 * len(hs))) / ((o + 0.5) / (no + 0.5 * len(ho))), 4)
        for s, o in zip(hs, ho, strict=True)
    )
    return LinkModel(
        gap_pdf=tuple(round(p, 8) for p in gap_pdf),
        stays=tuple(sorted(round(s, 1) for s in stays)),
        rssi_ratio=ratio,
        sweeps_per_visitor=round(scans_total / max(len(stays), 1), 3),
        visitors=len(stays),
        source=source,
    )


def blend(site: LinkModel, default: LinkModel, k: int = MIN_VISITORS) -> LinkModel:
    """The site's measurement, shrunk toward the default while it rests on few visitors."""
    w = site.visitors / (site.visitors + k) if site.visitors else 0.0
    if w == 0.0:
        return default

    def mix(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
        return tuple(w * x + (1 - w) * y for x, y in zip(a, b, strict=True))

    return LinkModel(
        gap_pdf=mix(site.gap_pdf, default.gap_pdf),
        stays=site.stays if site.visitors >= k else tuple(sorted(site.stays + default.stays)),
        rssi_ratio=tuple(
            math.exp(w * math.log(x) + (1 - w) * math.log(y))
            for x, y in zip(site.rssi_ratio, default.rssi_ratio, strict=True)
        ),
        sweeps_per_visitor=w * site.sweeps_per_visitor + (1 - w) * default.sweeps_per_visitor,
        visitors=site.visitors,
        source=f"{site.source}, shrunk toward the default ({w:.0%} site)",
    )


def identified_visits(
    visits: Iterable[Mapping[str, Any]],
    is_open: Any = None,
    *,
    min_s: float = 120.0,
    max_s: float = 4 * 3600.0,
    gap_s: float = 900.0,
) -> list[list[Scan]]:
    """Stays of phones whose MAC is an identity (globally administered), as scan lists.

    A stay is a device's scans split by silences over ``gap_s``; kept if it lasted ``min_s`` to
    ``max_s`` (a visit, not a passer-by, nor staff or equipment) and began while the shop was
    open (``is_open(t)``, when given).
    """
    from footfall.hub.sweeps import scans_of

    by_dev: dict[str, list[Mapping[str, Any]]] = {}
    for v in visits:
        if not v.get("randomized", True):
            by_dev.setdefault(v["device"], []).append(v)
    out: list[list[Scan]] = []
    for vs in by_dev.values():
        scans = [Scan(t, r) for t, r in scans_of(vs)]
        stay: list[Scan] = []
        for sc in scans + [Scan(float("inf"), {})]:
            if stay and sc.t - stay[-1].t > gap_s:
                length = stay[-1].t - stay[0].t
                if min_s <= length <= max_s and (is_open is None or is_open(stay[0].t)):
                    out.append(stay)
                stay = []
            stay.append(sc)
    return out


def _load_default() -> LinkModel:
    import json
    from pathlib import Path

    return LinkModel.from_dict(json.loads((Path(__file__).with_name("linkmodel_default.json")).read_text()))


DEFAULT = _load_default()
