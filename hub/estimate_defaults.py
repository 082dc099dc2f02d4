"""What the hub cannot measure by radio alone: the defaults every estimate starts from.

``hub/estimate.py`` turns stays into figures of people with a site's measured model
(``hub/sitefit.py``) and these numbers, each chosen on the simulator's tuning seeds and
documented where it is defined and in docs/metrics.md ("How well"); a store's door count
replaces the ones a count can correct (``footfall calibrate counts``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z90 = 1.645  # ranges are 90 % intervals


@dataclass(frozen=True)
class ModelSpread:
    """The model part of a range: the root mean square of log(truth / estimate) between tuning
    days (bias included: a figure that is short on average gets a range that says so), per
    figure, and the days it was measured on. Measured, not known: a 90 % prediction interval for
    a new day is wider by t(0.95, days - 1) / z(0.95) x sqrt(1 + 1 / days)."""

    visitors: float
    passersby: float
    dwell: float  # median dwell
    mean_dwell: float
    days: int
    t95: float  # t(0.95, days - 1)

    @property
    def predictive(self) -> float:
        return self.t95 / Z90 * math.sqrt(1 + 1 / self.days)


@dataclass(frozen=True)
class PassbyCount:
    """How a kind of site's passers-by count turns scans into people (``SiteModel.passersby``).

    The count: the street-facing sensor's scans in stays of the tracker's identity pass that are
    not visits, each weighed by one less its stay's p_visit (``passby_stays.passing_scans``); with
    ``outside_only``, only those that read outside by the site's inside model. Split on the
    simulator's truth it holds a passer-by's scans, about the same number at every street, and
    scans of visitors (a randomizing phone's walk to the door and away, cut from its visit by a
    new address), so a count divided by a passer-by's scans alone read 40 % high where 2.5
    passers-by walk past a visitor and 22 % low at 10. ``visitor_scans`` a visitor are taken off
    first (less than the truth split measures: taking all of it off adds the visitors'
    day-to-day noise, and the fit weighs both), the rest divided by ``scans``, a passer-by's
    (all phones: Wi-Fi off is in ``probing_share``), and multiplied by the site's crowding over
    ``crowding_ref`` to the ``crowding_exp``: the more phones of one model about, the more
    often the tracker joins a passer-by's scan to another phone's stay that is a visit.
    ``scans`` is a default, not the site's scan rate: that is measured on the visitors with a
    fixed address, idle phones of a few older models, and it moved the passers-by of small
    stores by a third."""

    scans: float
    visitor_scans: float
    crowding_exp: float
    outside_only: bool = True
    # The model part of this count's range (see ModelSpread), where it is measured apart from the
    # other kinds; None: the site's ModelSpread.passersby.
    spread: float | None = None


@dataclass(frozen=True)
class Defaults:
    """What the hub cannot measure by radio alone. Chosen on the simulator's tuning seeds
    (``footfall evaluate --metrics --seeds tuning``; each number says which: most on seeds 1-10,
    41, 44, 49 and 52 before 2026-12-06, which ``--seeds 1-10,41,44,49,52`` gives again, the
    passers-by count on all the tuning stores with two or three sensors); a site's door count
    replaces the visitors' and passers-by's (``footfall calibrate counts``)."""

    probing_share: float = 0.9  # people whose phone probes (simulator: 10 % Wi-Fi off; no published figure found)
    # How the passers-by count turns scans into people (see PassbyCount), by what the site can
    # tell: two sensors, three or more (which read a phone's place more surely; the sensors its
    # inside model was trained on; four or more were never simulated and get three's), or one
    # sensor or an inside model not trained yet. Fitted by ``python -m footfall.tools.fit_passersby`` on
    # the tuning stores of each kind at three streets (docs/metrics.md, "Capture rates other than
    # 1 in 6"); one sensor keeps the count of before 2026-12-06, below.
    # The figure shown is the geometric mean of this count and the scans' (hub/passby_scans.py),
    # so the spreads are the mean's, measured apart for each kind (each store left out of the scan
    # model's fit in turn, over the three streets, one day of each of the 18 stores: two sensors
    # 0.164, three 0.118 since the scan model asks about the scans of tracks as long as staff's
    # too, late on 2026-12-06, 0.173 and 0.121 before; this count alone read 0.236 and 0.124
    # there, in-sample, and 0.24 and 0.14 left out on 74 street-days): one pooled spread (0.19,
    # ModelSpread.passersby) gave two-sensor stores ranges too narrow for their store-level
    # errors and three-sensor ones too wide.
    passby_two_sensors: PassbyCount = PassbyCount(0.253, 0.24, 0.45, spread=0.164)
    passby_more_sensors: PassbyCount = PassbyCount(0.297, 0.40, 0.25, spread=0.118)
    # One sensor cannot tell a visitor's scans at the door from a passer-by's: split on the truth
    # its count held 0.09-0.21 scans a passer-by against 0.56-1.38 a visitor, and no share taken
    # off followed the street (one-sensor tuning days, 2026-12-06): every scan of the
    # street-facing sensor in such stays counts, nothing is taken off, one factor (0.415 scans a
    # passer-by, chosen on the 2-3 sensor tuning days at 1 in 6 before 2026-12-06).
    # Since later on 2026-12-06 a one-sensor site's figure is its scans' count alone
    # (hub/passby_scans.py); this count is what a site with no scan model shows.
    passby_weak: PassbyCount = PassbyCount(0.415, 0.0, 0.0, outside_only=False)
    passby_max_s: float = 90.0  # a session longer than this does not look like a walk past
    # Scans of stays up to this long that are not visits count as passers-by: the tracker joins
    # some passers-by of one phone model into a longer stay (with a 90 s limit the estimate then
    # fell with the share of randomizing phones); longer still is a neighbour's device.
    passby_scans_max_s: float = 900.0
    session_gap_s: float = 600.0  # a device silent this long has left (the agents' visit gap)
    identified_gap_s: float = 1800.0  # the same for a fixed-address phone (see hub/analysis.py)
    # One sensor, or an inside model not trained yet (see tracker_factor for the others): the
    # tracker's and the classifier's visits per visitor, inverted, at ``crowding_ref`` phones
    # present: the more phones of one model are in the shop at once, the more often the tracker
    # joins two into one, so the factor grows as crowding ** exp (SiteModel.crowding). Least
    # squares of log(truth / estimate) on log crowding over the tuning days with 2-3 sensors
    # (truth model 3; one sensor: see one_sensor_spread). On truth model 2 the crowding term cut
    # the spread of log(truth / estimate) between days from 0.23 to 0.15; on truth model 3,
    # where a still phone keeps its signal and the tracker tells co-present phones apart
    # better, it matters less (0.110 -> 0.108).
    visitor_factor: float = 1.19
    crowding_ref: float = 10.0
    crowding_range: tuple[float, float] = (5.0, 20.0)  # the tuning days' range: no extrapolation
    visitor_crowding_exp: float = 0.48
    # Visitors with a randomizing phone, where the site tells the shop from the street (two sensors
    # or more, inside model trained): the mean of two estimates with errors of their own. The
    # tracker's stays, times its correction at the site's crowding (it joins phones of one model
    # present at once), and the phones' inside scans over the scans one phone makes in the site's
    # mean visit (``SiteModel.visit_dwell_s`` x ``inside_scans_per_min``), which no joining or
    # splitting of stays changes. A phone with a fixed address counts as heard: its stays are
    # not pieced together (on the tuning days their visit probabilities summed to 0.99 of the
    # fixed-address visitors with Wi-Fi on, 0.85-1.13 a day). The three numbers were fitted
    # together on the 2-3 sensor tuning days (log(truth / estimate) least squares: spread
    # between days 0.068, against 0.108 for the tracker's correction alone; left out a store at
    # a time, 0.112, the visitors' model spread below); a site whose mean visit is longer makes
    # more scans a visit, which the second estimate follows (a fixed number of scans per visitor
    # would not: it is the simulator's dwell). The mean visit comes from the days the site's
    # model was fitted on (link._history_dwell), on a first day from the day itself.
    tracker_factor: float = 1.055
    tracker_crowding_exp: float = 0.905
    inside_scans_per_min: float = 0.506
    scan_weight: float = 0.5  # the scan estimate's share of the mean
    dwell_factor: float = 0.81  # median dwell from the stays (one sensor; the heard figure otherwise)
    # The estimated median dwells of the tuning days (6.7-13.2 min): the kind of shop the dwell
    # figures were checked on. Outside it (docs/metrics.md, "What one kind of shop cannot test")
    # the stays' estimate, which one sensor still uses, pulls a shop's dwell toward this one's,
    # reading a dealership's hour-long visits about 40 % short; with two sensors or more Little's
    # law follows the shop but its median assumes this shop's ratio to the mean. The dashboard
    # says which (figures.dwell_caveat). Held out it fires on 0 of 30 days of this kind of shop,
    # on 6 of 8 --shops days of half the dwell and 12 of 13 of three times (Little's law).
    dwell_checked_s: tuple[float, float] = (400.0, 795.0)
    mean_dwell_factor: float = 0.78  # mean dwell: merged stays lengthen the tail more than the middle
    # Dwell from Little's law (hub/dwell.py), with two sensors or more: the median is the mean
    # times this, exp(mean log(truth median / Little's mean)) over the 2-3 sensor tuning days (the
    # simulated visits' own ratio is 0.57-0.63); Little's mean needs no factor (the same fit: 0.995).
    median_to_mean: float = 0.583
    # Their model spreads (median, mean): root mean square of log(truth / estimate) over those
    # 26 days, widened for a new day as ``spread`` is (its 12 days: a little wider than 26 need).
    little_spread: tuple[float, float] = (0.129, 0.091)
    scan_rate: float = 1 / 120.0  # a phone's scans per second while in range, before the site measured it
    # The model part of every range, by how many sensors the site has (see ModelSpread). One
    # sensor cannot tell the street from the shop: on the tuning days its passers-by came out
    # 24 % short on average, visitors 13 %, median dwell 25 % (held out: 16, 8 and 15 %; median
    # dwell 13 and 6 % since it takes a stay's whole span, estimate.visit_length), and no
    # correction carried over from the tuning days to the held-out ones (factors on crowding
    # fitted on the first, tried on truth models 2 and 3, cut the errors there and raised them
    # on the second: visitors 13 -> 20 %, passers-by 18 -> 27 %; on 2026-12-06 the visitor
    # weights' split, fixed-address phones apart, held out 14.6 -> 33.9 % at 10 passers-by a
    # visitor: docs/metrics.md, "Truth model 3"), so its ranges are wide
    # instead; so are those of a site whose inside model is not trained yet (measured on the
    # tuning days with 1 sensor). Visitors with 2-3 sensors: the spread of the days each left
    # out of the fit in turn (a store at a time), since three numbers were fitted on 12 days.
    # Passers-by and dwell: measured on those tuning days with three streets each (2.5, 5 and 10
    # passers-by a visitor; the scenarios walk 5 past), since a shop's street is not known
    # beforehand. Passers-by with 2-3 sensors (2026-12-06): the spread of the 74 street-days of
    # the 18 tuning stores with 2-3 sensors, each store left out of the fit in turn
    # (tools/fit_passersby.py; two sensors 0.24, three 0.14; 0.29 for the count before, which
    # read 40 % high at 2.5 and 22 % low at 10: docs/metrics.md, "Capture rates other than 1 in
    # 6"). At the scenarios' street alone the spreads were 0.13 (0.12 before) and 0.13 (median
    # dwell; one sensor 0.36, 0.22 and visitors 0.22). The ranges of passers-by with 2-3 sensors
    # take each kind's own spread (PassbyCount.spread); the pooled 0.19 here weighs a door count
    # (hub/calibrate_fit.py). One sensor's passers-by, counted by its scan model alone since
    # 2026-12-06, take that model's spread (hub/passby_model_one_sensor.json: 0.213 since that
    # night, on 13 stores without the street-vs-shop ratio; 0.301 on 6 with it); 0.48 here is
    # the stays' count's, left for a door count's weight and a site with no scan model. One
    # sensor's median dwell since 2026-12-06, evening (same tuning days, three streets): 0.170
    # (0.240 before) as the geometric mean of the stays' median and the mean's
    # (ranges.dwell_figures). One sensor's visitors since 2026-12-06, late: 0.20 (0.25 before),
    # raised by the share of the person-time in tracks as long as staff's (estimate.chain_factor).
    spread: ModelSpread = ModelSpread(0.112, 0.19, 0.15, 0.10, days=12, t95=1.7959)
    one_sensor_spread: ModelSpread = ModelSpread(0.20, 0.48, 0.17, 0.15, days=10, t95=1.8331)
    # People present per minute (hub/occupancy.py) times this, with two sensors or more and with
    # one (or an inside model not trained yet: SiteModel.weak). Without it a day's person-minutes
    # come out short of the visitors' time inside on the tuning days (2-3 sensors -10 %, spread
    # between days 0.128 -> 0.073 with it; one sensor -12 %, 0.133 -> 0.047), while the visitors
    # and their mean dwell, each corrected on its own, come out close (-1 %; one sensor -10 %).
    # Why is not pinned down: passers-by's stays hold 4-12 % of the visit probabilities the
    # visitor count adds up and hardly occupy the shop, which explains part. Refitted 2026-12-06
    # (1.116 and 1.256 before) once a randomizing track as long as staff's counted by its inside
    # scans instead of not at all (occupancy.chained): with one sensor such tracks were most of
    # what the factor made up for. exp(mean log(truth / estimate)) over the tuning days:
    # ``python -m footfall.tools.fit_occupancy``. A door count does not replace it.
    occupancy_factor: float = 1.111
    occupancy_factor_weak: float = 1.132
    # How stays of each class look (shares that are one scan, a few scans within a walk past,
    # longer), measured by the session EM (``sitefit.shape_em`` with no prior) on the tuning days with
    # 2-3 sensors, where the pattern over sensors tells the street from the shop
    # (``python -m footfall.tools.fit_link_model --shapes``). With one sensor every scan reads
    # about as "inside" as any other, nothing in a day's data says how visits look against walks
    # past, and the EM's answer wandered: on one held-out store it took a single-scan stay for a
    # visit 58 % of the time where 42 % were. The EM weighs these as ``shape_prior_n`` stays a
    # day of data (tuning days: 100 and 300 both cut the passers-by error, 300 more, one-sensor
    # stores too; per day, so that a week of history does not drown the anchor).
    shape_visit: tuple[float, float, float] = (0.28, 0.059, 0.661)
    shape_pass: tuple[float, float, float] = (0.763, 0.149, 0.089)
    shape_prior_n: float = 300.0  # per day of stays fitted on (a site's model rests on a week)


DEFAULTS = Defaults()
