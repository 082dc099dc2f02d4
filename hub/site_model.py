"""A site's model: what the hub measured about a store (its inside model, its phones' scan rate,
how busy it is, which sensor faces the street) and the corrections its figures take from it
(the tracker's, the heard and probing shares, a door count's calibration).

``hub/sitefit.py`` fits it from a day's stays, ``hub/estimate.py`` turns stays into people with
it (and re-exports it: most callers import it from there), ``hub/link.py`` stores it per day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from footfall.hub.estimate_defaults import DEFAULTS, Defaults, PassbyCount
from footfall.hub.inside import InsideModel

if TYPE_CHECKING:  # hub/estimate.py builds on this module
    from footfall.hub.estimate import Session


def crowding_factor(crowding: float, exp: float, defaults: Defaults = DEFAULTS) -> float:
    """(crowding / ``crowding_ref``) ** exp, crowding held within the tuning days' range
    (``crowding_range``); 1 where crowding was not measured (0)."""
    if crowding <= 0 or not exp:
        return 1.0
    lo, hi = defaults.crowding_range
    return (min(max(crowding, lo), hi) / defaults.crowding_ref) ** exp


@dataclass
class Calibration:
    """A site's correction from a real count (``footfall calibrate counts``); 1.0 = none."""

    visitors: float = 1.0
    passersby: float = 1.0
    source: str = ""
    fit: dict[str, Any] = field(default_factory=dict)


@dataclass
class SiteModel:
    inside: InsideModel = field(default_factory=InsideModel)
    scan_rate: float = DEFAULTS.scan_rate
    identified: int = 0  # identified stays the scan rate was measured on
    session_prior: float = 0.3
    shape_llr: dict[str, float] = field(default_factory=dict)  # see sitefit.session_classes
    heard_share: float = 1.0  # share of visits whose phone scans at all while there (see sitefit.fit_site_model)
    front_sensor: str | None = None
    sweeps_per_visitor: float = 0.0  # for the tracker's new-device rate; 0 = its default
    crowding: float = 0.0  # phones present per open minute, from scans (0: not measured)
    visit_dwell_s: float = 0.0  # mean visit dwell of the stays fitted on (0: not measured)
    fitted_on: str = ""
    calibration: Calibration = field(default_factory=Calibration)

    def crowding_factor(self, exp: float, defaults: Defaults = DEFAULTS) -> float:
        return crowding_factor(self.crowding, exp, defaults)

    @property
    def one_sensor(self) -> bool:
        return len(self.inside.sensors) <= 1

    @property
    def weak(self) -> bool:
        """Street and shop told apart by the signal pattern only with two sensors or more and a
        trained inside model (the untrained fallback is a threshold on the strongest sensor)."""
        return self.one_sensor or not self.inside.trained

    def visitor_factor(self, defaults: Defaults = DEFAULTS) -> float:
        """Visitors per visit probability summed: the tracker's correction at this site's
        crowding, its heard share, the probing share and the site calibration."""
        return (
            defaults.visitor_factor
            * self.crowding_factor(defaults.visitor_crowding_exp, defaults)
            / self.heard_share
            / defaults.probing_share
            * self.calibration.visitors
        )

    def people(
        self, s: Session, defaults: Defaults = DEFAULTS, *, span_s: float | None = None, scans: int | None = None
    ) -> float:
        """People one stay stands for: its visit probability, weighted as the visitor count weighs
        it (see ``Defaults.tracker_factor``), over the heard share and the probing share, times the
        site calibration. 0 for staff.

        With ``span_s`` (and the ``scans`` heard over it): the people present at once while the
        stay lasts, for occupancy. The scan part is then the scans over what one phone makes in
        that span, not in the site's mean visit: a stay of two phones joined counts two people
        at a time, and a long stay is one person for longer, not several."""
        if s.staff or s.p_visit <= 0:
            return 0.0
        if self.weak or self.visit_dwell_s <= 0:
            return s.p_visit * self.visitor_factor(defaults)
        if s.identified:
            weight = 1.0
        else:
            w = defaults.scan_weight
            tracker = defaults.tracker_factor * self.crowding_factor(defaults.tracker_crowding_exp, defaults)
            n = len(s.scans) if scans is None else scans
            minutes = (self.visit_dwell_s if span_s is None else max(span_s, 1.0)) / 60.0
            weight = (1.0 - w) * tracker + w * n / (minutes * defaults.inside_scans_per_min)
        return s.p_visit * weight / self.heard_share / defaults.probing_share * self.calibration.visitors

    def passby_count(self, defaults: Defaults = DEFAULTS) -> PassbyCount:
        """How this site's passers-by count turns scans into people: by one sensor (or an
        untrained inside model), two sensors, or three or more."""
        if self.weak:
            return defaults.passby_weak
        return defaults.passby_two_sensors if len(self.inside.sensors) == 2 else defaults.passby_more_sensors

    def passersby_factor(self, defaults: Defaults = DEFAULTS) -> float:
        """Passers-by per scan of the count, once visitors' are off (:func:`passing_scans`): one
        over the scans a passer-by's phone leaves in it, over the probing share, times the
        crowding term and the site calibration."""
        count = self.passby_count(defaults)
        return (
            1.0
            / max(count.scans, 1e-9)
            / defaults.probing_share
            * self.crowding_factor(count.crowding_exp, defaults)
            * self.calibration.passersby
        )

    def passersby(self, scans: float, visitors: float, defaults: Defaults = DEFAULTS) -> float:
        """Passers-by from a period's :func:`passing_scans` and its visitors: the scans visitors
        leave in that count come off first (``PassbyCount.visitor_scans`` each), so the figure
        follows the street instead of the visitors (never below 0)."""
        left = scans - self.passby_count(defaults).visitor_scans * visitors
        return max(left, 0.0) * self.passersby_factor(defaults)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inside"] = self.inside.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SiteModel:
        cal = d.get("calibration") or {}
        return cls(
            inside=InsideModel.from_dict(d.get("inside") or {}),
            scan_rate=float(d.get("scan_rate", DEFAULTS.scan_rate)),
            identified=int(d.get("identified", 0)),
            session_prior=float(d.get("session_prior", 0.3)),
            shape_llr={k: float(v) for k, v in (d.get("shape_llr") or {}).items()},
            heard_share=float(d.get("heard_share", 1.0)),
            front_sensor=d.get("front_sensor"),
            sweeps_per_visitor=float(d.get("sweeps_per_visitor", 0.0)),
            crowding=float(d.get("crowding", 0.0)),
            visit_dwell_s=float(d.get("visit_dwell_s", 0.0)),
            fitted_on=str(d.get("fitted_on", "")),
            calibration=Calibration(**{k: cal[k] for k in ("visitors", "passersby", "source", "fit") if k in cal}),
        )
