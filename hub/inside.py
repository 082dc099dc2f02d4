"""Inside or outside the shop, scan by scan, learned from the site's own quiet hours.

One RSSI threshold cannot tell a shopper near the door from a passer-by on the pavement: with
a sensor a metre behind the shop window both read -60 dBm. What separates them is the pattern
over the store's sensors (the one at the back hears the shopper) and how often each pattern
occurs inside and outside. Both are measured at the site:

- **outside**: scans heard while the shop is closed (before opening, after closing, at
  night), from devices that are not staff or equipment: only the street is around then;
- **inside**: scans of identified visitors (globally administered MACs that stayed from two
  minutes to four hours while the shop was open), minus their first and last minute
  (walking in and out).

Per sensor, a histogram of the strongest RSSI of a scan (4 dB bins from -100 dBm, plus "not
heard by this sensor") for each class; a scan's log likelihood ratio is the sum over sensors
(naive Bayes: sensors hear one scan independently given where the phone is). The share of
scans that are inside (``prior``) is fitted by EM on open-hours scans; the posterior
:meth:`InsideModel.p_inside` is what the tracker and the estimators use.

Without quiet-hours scans or identified visitors (a new site, a 24-hour store) the model falls
back on the agents' rule: strong (``inside_rssi``) means inside, with a soft edge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BIN_DB = 4.0
LOW_DBM = -100.0
N_BINS = 21  # -100 .. -16 dBm
UNHEARD = N_BINS  # index of "not heard by this sensor"
MIN_SAMPLES = 20  # scans of each class before a site's histograms are trusted (the kernel smooths the rest)
KERNEL_DB = 5.0
_KERNEL = [math.exp(-0.5 * (i * BIN_DB / KERNEL_DB) ** 2) for i in range(N_BINS)]
_KERNEL = [k / (_KERNEL[0] + 2 * sum(_KERNEL[1:])) for k in _KERNEL]


def _bin(rssi: float | None) -> int:
    if rssi is None:
        return UNHEARD
    return min(max(int((rssi - LOW_DBM) // BIN_DB), 0), N_BINS - 1)


@dataclass
class InsideModel:
    sensors: tuple[str, ...] = ()
    inside: dict[str, list[float]] = field(default_factory=dict)  # sensor -> counts per bin (+ unheard)
    outside: dict[str, list[float]] = field(default_factory=dict)
    prior: float = 0.5
    n_inside: int = 0
    n_outside: int = 0
    inside_rssi: int = -70  # the fallback's threshold (the agents' rule)

    @property
    def trained(self) -> bool:
        return self.n_inside >= MIN_SAMPLES and self.n_outside >= MIN_SAMPLES and bool(self.sensors)

    def _p(self, hist: Sequence[float], total: float, b: int) -> float:
        # A Gaussian kernel over the bins (sigma KERNEL_DB: RSSI moves by several dB from scan to
        # scan, and a site's first days give few samples), "unheard" on its own, and a floor:
        # a bin never seen is rare, not impossible.
        if b == UNHEARD:
            return (hist[UNHEARD] + 0.5) / (total + 1.0)
        heard = total - hist[UNHEARD]
        v = sum(hist[j] * _KERNEL[abs(j - b)] for j in range(N_BINS))
        return (v + 0.02) / (heard + 0.02 * N_BINS) * (heard + 0.5) / (total + 1.0)

    def llr(self, peak: Mapping[str, float]) -> float:
        """log P(scan | inside) / P(scan | outside) of a scan's strongest RSSI per sensor."""
        if not self.trained:
            best = max(peak.values(), default=None)
            return -4.0 if best is None else 0.35 * (best - self.inside_rssi)
        total = 0.0
        for s in self.sensors:
            b = _bin(peak.get(s))
            hi, ho = self.inside[s], self.outside[s]
            total += math.log(self._p(hi, self.n_inside, b)) - math.log(self._p(ho, self.n_outside, b))
        return max(min(total, 30.0), -30.0)

    def p_inside(self, peak: Mapping[str, float]) -> float:
        lo = self.llr(peak) + math.log(self.prior / (1.0 - self.prior))
        return 1.0 / (1.0 + math.exp(-max(min(lo, 40.0), -40.0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensors": list(self.sensors),
            "inside": self.inside,
            "outside": self.outside,
            "prior": self.prior,
            "n_inside": self.n_inside,
            "n_outside": self.n_outside,
            "inside_rssi": self.inside_rssi,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InsideModel:
        return cls(
            sensors=tuple(d.get("sensors", ())),
            inside={k: [float(x) for x in v] for k, v in d.get("inside", {}).items()},
            outside={k: [float(x) for x in v] for k, v in d.get("outside", {}).items()},
            prior=float(d.get("prior", 0.5)),
            n_inside=int(d.get("n_inside", 0)),
            n_outside=int(d.get("n_outside", 0)),
            inside_rssi=int(d.get("inside_rssi", -70)),
        )


def fit(
    inside_scans: Iterable[Mapping[str, float]],
    outside_scans: Iterable[Mapping[str, float]],
    open_scans: Iterable[Mapping[str, float]] = (),
    inside_rssi: int = -70,
) -> InsideModel:
    """Histograms from labelled scans (each a sensor -> strongest RSSI map), prior by EM on
    ``open_scans`` (the unlabelled scans of open hours)."""
    ins, outs = list(inside_scans), list(outside_scans)
    sensors = sorted({s for scan in ins + outs for s in scan if "/" not in s})
    model = InsideModel(sensors=tuple(sensors), inside_rssi=inside_rssi)
    for name, scans in (("inside", ins), ("outside", outs)):
        hists = {s: [0.0] * (N_BINS + 1) for s in sensors}
        for scan in scans:
            for s in sensors:
                hists[s][_bin(scan.get(s))] += 1.0
        setattr(model, name, hists)
    model.n_inside, model.n_outside = len(ins), len(outs)
    lls = [model.llr(scan) for scan in open_scans]
    if lls and model.trained:
        pi = 0.5
        for _ in range(100):
            post = sum(1.0 / (1.0 + math.exp(-(ll + math.log(pi / (1.0 - pi))))) for ll in lls) / len(lls)
            post = min(max(post, 0.01), 0.99)
            if abs(post - pi) < 1e-4:
                pi = post
                break
            pi = post
        model.prior = pi
    return model
