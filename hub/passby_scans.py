"""Which of the street-facing sensor's scans are passers-by's: a second passers-by count.

The hub's count of passers-by (``SiteModel.passersby``) takes the scans of the identity pass's
short stays that are not visits and takes a share per visitor off: what it leaves varies with
how the tracker cut that day's visits (docs/metrics.md, "The passers-by count since
2026-12-06"). This count asks of each outside-looking scan, with no linking at all, how likely
it is a passer-by's, from what surrounds it: other scans of the same address (a fixed MAC) or
fingerprint (a random one) within one, three and ten minutes, how many of those read inside,
the scan's own inside-or-outside reading and signal at the street-facing sensor, how many
sensors heard it, and how busy the street is against the shop that day (a passer-by is more
likely where outside scans outnumber inside ones). Split on the simulator's truth, a
passer-by leaves 0.21-0.30 such scans at every street and store (tuning stores, 2026-12-06),
so the probabilities summed, times one factor per kind of site, count passers-by; the factor
takes in phones with Wi-Fi off.

The probability is a logistic regression on the features and their pairwise products
(``python -m footfall.tools.fit_passby_scans`` fits it on the tuning stores' days at three
streets, labelled by the simulator, and writes ``passby_model_default.json``). The estimate
takes the geometric mean of the two counts: their errors come from different things (the
visitors' pieces against collisions between phones of one model), and the mean was better than
either on the tuning stores, each left out of the fit in turn (docs/metrics.md).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # estimate.py calls this module
    from footfall.hub.estimate import ScanRecord, Session, SiteModel

DEFAULT_PATH = Path(__file__).with_name("passby_model_default.json")  # two sensors or more
ONE_SENSOR_PATH = Path(__file__).with_name("passby_model_one_sensor.json")
FEATURES = (
    "fixed_address",
    "same_60s",
    "same_180s",
    "same_600s",
    "same_inside_180s",
    "same_inside_600s",
    "llr",
    "front_rssi",
    "sensors",
    "street_vs_shop",
)
NO_SIGNAL = -100.0
NEAR_S = 600.0  # the widest window a scan's surroundings are counted in (either side)


@dataclass(frozen=True)
class ScanModel:
    """The fitted logistic regression: standardized features, their products up to degree two
    (``powers``, as scikit-learn's PolynomialFeatures lists them), standardized again."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    powers: tuple[tuple[int, ...], ...]
    poly_mean: tuple[float, ...]
    poly_scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    factors: dict[str, float]  # passers-by per summed probability, by kind of site ("2", "3")
    # Each feature's range on the days it was fitted on: a site unlike any simulated gets no
    # feature beyond it (a product of two features far outside it would dominate the sum).
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    source: str = ""
    # "geometric_mean": the figure is the mean of this count and the stays'; "alone": this count
    # is the figure, with ``spread`` the model part of its range (one sensor, below).
    combine: str = "geometric_mean"
    spread: float | None = None
    # Fitted with the scans of the tracks as long as staff's asked about too (see candidates()).
    tracks: bool = False
    # Whether the street-vs-shop ratio is a feature (else it is 0 for every scan). With one
    # sensor it is not: the ratio splits scans at the site's inside edge, and with one sensor that
    # edge rests on a hundred night scans and moves by a 4 dB bin from store to store (from day to
    # day at one store), taking most visitors' outside scans with it. The ratio then read a quiet
    # street as a busy one and back: one-sensor tuning stores, each left out of the fit in turn,
    # spread 0.293 with it, 0.213 without (docs/metrics.md, "One sensor's scans without the street").
    street_vs_shop: bool = True

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0)
        if self.low:
            x = np.clip(x, np.asarray(self.low), np.asarray(self.high))
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        poly = np.prod(z[:, None, :] ** np.asarray(self.powers)[None, :, :], axis=2)
        poly = (poly - np.asarray(self.poly_mean)) / np.asarray(self.poly_scale)
        return 1.0 / (1.0 + np.exp(-(poly @ np.asarray(self.coef) + self.intercept)))

    def factor(self, sensors: int) -> float:
        return self.factors[site_kind(sensors)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "powers": [list(p) for p in self.powers],
            "poly_mean": list(self.poly_mean),
            "poly_scale": list(self.poly_scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "factors": self.factors,
            "low": list(self.low),
            "high": list(self.high),
            "source": self.source,
            "combine": self.combine,
            "spread": self.spread,
            "tracks": self.tracks,
            "street_vs_shop": self.street_vs_shop,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanModel:
        if list(d.get("features", [])) != list(FEATURES):
            raise ValueError(f"passers-by scan model has features {d.get('features')}, this hub computes {FEATURES}")
        return cls(
            tuple(d["mean"]),
            tuple(d["scale"]),
            tuple(tuple(int(e) for e in p) for p in d["powers"]),
            tuple(d["poly_mean"]),
            tuple(d["poly_scale"]),
            tuple(d["coef"]),
            float(d["intercept"]),
            {str(k): float(v) for k, v in d["factors"].items()},
            tuple(d.get("low", ())),
            tuple(d.get("high", ())),
            str(d.get("source", "")),
            str(d.get("combine", "geometric_mean")),
            d.get("spread"),
            bool(d.get("tracks", False)),
            bool(d.get("street_vs_shop", True)),
        )


def site_kind(sensors: int) -> str:
    """The kind of site a factor is fitted for: two sensors, or three (four or more were never
    simulated and count as three)."""
    return "1" if sensors <= 1 else "2" if sensors == 2 else "3"


_LOADED: dict[Path, ScanModel] = {}


def default_model(one_sensor: bool = False) -> ScanModel | None:
    """The shipped model of the kind, or None where none was fitted: the stays' count alone is
    then the figure (what ``tools/fit_passby_scans.py`` fits beside, so it runs without one)."""
    path = ONE_SENSOR_PATH if one_sensor else DEFAULT_PATH
    if path not in _LOADED:
        if not path.exists():
            return None
        _LOADED[path] = ScanModel.from_dict(json.loads(path.read_text()))
    return _LOADED[path]


def model_for(site: SiteModel) -> ScanModel | None:
    """The scan model of a kind of site: one sensor has its own (fitted on one-sensor days); a
    site whose inside model is not trained yet has none (its outside reading is a default
    threshold, unlike any day either was fitted on: their inside models were trained)."""
    sensors = len(site.inside.sensors)
    if not site.inside.trained:
        return None
    model = default_model(one_sensor=sensors == 1)
    # A model written for the other kind of site (fit_passby_scans --write to the wrong file).
    return model if model is not None and site_kind(sensors) in model.factors else None


@dataclass
class Neighbours:
    """Every scan of the identity pass by whose it may be (``ScanRecord.ident``), and which
    read inside: what a scan's surroundings are counted on."""

    model: SiteModel
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    inside: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    llr: dict[int, float] = field(default_factory=dict)

    @classmethod
    def of(cls, sessions: Iterable[Session], model: SiteModel) -> Neighbours:
        nb = cls(model)
        for s in sessions:
            for sc in s.scans:
                llr = model.inside.llr(sc.peak)
                nb.llr[id(sc)] = llr
                key = _key(sc)
                nb.times[key].append(sc.t)
                if llr >= 0:
                    nb.inside[key].append(sc.t)
        for d in (nb.times, nb.inside):
            for ts in d.values():
                ts.sort()
        return nb

    def llr_of(self, sc: ScanRecord) -> float:
        got = self.llr.get(id(sc))
        return self.model.inside.llr(sc.peak) if got is None else got


def _key(sc: ScanRecord) -> str:
    # A scan whose source is not known (a stay built by hand) is nobody else's.
    return sc.ident or f"#{id(sc)}"


def _near(ts: Sequence[float], t: float, w: float) -> int:
    return bisect.bisect_right(ts, t + w) - bisect.bisect_left(ts, t - w)


def candidates(
    counted: Iterable[Session], nb: Neighbours, settled: float | None = None, tracks: bool = False
) -> list[ScanRecord]:
    """The scans this count asks about: heard by the street-facing sensor, reading outside, in
    stays that are not staff; with ``settled``, only scans up to then (see :func:`settled_before`).

    With ``tracks`` (a model fitted so, ``ScanModel.tracks``) also in the identity pass's stays
    left out as staff because they are in a randomizing track as long as staff's
    (``Session.in_track``). The tracker strings phones of one model into such tracks,
    passers-by's scans among them, and leaving them out lost those passers-by where a street is
    busy: on the one-sensor tuning days the count's shortfall followed the share of the
    person-time in such tracks (correlation 0.49 over three streets). Each scan's chance comes
    from the scans around it by its fingerprint, not from the track it was put in."""
    front = nb.model.front_sensor
    return [
        sc
        for s in counted
        if not s.staff or (tracks and s.in_track)
        for sc in s.scans
        if (front is None or front in sc.peak) and nb.llr_of(sc) < 0 and (settled is None or sc.t <= settled)
    ]


def settled_before(final_before: float | None, visit_gap_s: float, day_end: float) -> float | None:
    """Until when a scan's surroundings are all at the hub, live: a phone's scans reach it once
    the phone has been silent for the agents' visit gap, so a scan is asked about only once the
    :data:`NEAR_S` after it are in (else a scan of the same phone arriving later would lower its
    chance, and today's count would step back). Once the watermark is past the day's end every
    scan counts: the link job relinks a day for the last time a few minutes after it, and a shop
    open late would otherwise lose its last quarter hour for good. (While the day is going on,
    the link job's periods end at the watermark itself: ``day_end`` is then the watermark.)"""
    if final_before is None or final_before > day_end:
        return None
    return final_before - visit_gap_s - NEAR_S


def street_vs_shop(counted: Iterable[Session], nb: Neighbours, settled: float | None = None) -> float:
    """log(outside scans at the street-facing sensor / scans inside) of a day's stays."""
    stays = list(counted)
    outside = len(candidates(stays, nb, settled))
    inside = sum(
        1 for s in stays if not s.staff for sc in s.scans if nb.llr_of(sc) >= 0 and (settled is None or sc.t <= settled)
    )
    return math.log(max(outside, 1) / max(inside, 1))


def features(cands: Sequence[ScanRecord], nb: Neighbours, busy: float) -> np.ndarray:
    front = nb.model.front_sensor
    rows = []
    for sc in cands:
        ts = nb.times.get(_key(sc), [sc.t])
        tin = nb.inside.get(_key(sc), [])
        t = sc.t
        # The scan itself is among its own (its ident's times): not counted.
        rows.append(
            (
                1.0 if sc.ident.startswith("mac:") else 0.0,
                math.log1p(max(_near(ts, t, 60.0) - 1, 0)),
                math.log1p(max(_near(ts, t, 180.0) - 1, 0)),
                math.log1p(max(_near(ts, t, NEAR_S) - 1, 0)),
                math.log1p(_near(tin, t, 180.0)),
                math.log1p(_near(tin, t, NEAR_S)),
                nb.llr_of(sc),
                sc.peak.get(front, NO_SIGNAL) if front else max(sc.peak.values(), default=NO_SIGNAL),
                float(len(sc.peak)),
                busy,
            )
        )
    return np.asarray(rows, dtype=float).reshape(-1, len(FEATURES))


def expected_scans(
    counted: Sequence[Session], nb: Neighbours, busy: float, scan_model: ScanModel, settled: float | None = None
) -> tuple[float, float]:
    """The passers-by's scans among a period's outside scans (:func:`candidates`, with the
    tracks' stays if the model was fitted with them): their probabilities summed, and the
    variance of that sum (each scan is one or not)."""
    busy = busy if scan_model.street_vs_shop else 0.0
    p = scan_model.probabilities(features(candidates(counted, nb, settled, scan_model.tracks), nb, busy))
    return float(p.sum()), float((p * (1.0 - p)).sum())
