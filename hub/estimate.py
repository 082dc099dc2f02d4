"""People, not devices: every headline figure as an estimate with its range.

The hub hears phones, not people, and not every phone: some have Wi-Fi off, a phone walking
past for half a minute is heard only if it happens to scan meanwhile, and a phone that rotates
its MAC every scan has to be pieced together by the tracker (``hub/derandomize.py``). This
module turns what was heard into estimates of people and says how; ``hub/ranges.py`` gives
each its range.

**Sessions.** A session is one stay of one device: a tracker device (or a globally
administered MAC) split by silences over ``gap_s``. Each of its scans has a log likelihood
ratio inside/outside from the site's inside model (``hub/inside.py``); the session is a visit
with probability ``p_visit = sigmoid(sum of its scans' LLR + logit(session prior))``, the
prior being the share of sessions that are visits (EM over the site's sessions). Summing
probabilities instead of drawing a line keeps the count unbiased where single sessions are
ambiguous (a short look-in and a passer-by reading alike).

**Visitors** = sum over sessions of ``p_visit`` times the people the stay stands for
(``SiteModel.people``), over the site's heard share (visits whose phone scans at all while
there, measured on identified phones) and ``probing_share`` (people whose phone probes at all),
times the site calibration. A stay of a phone with a fixed address is one person. A stay of a
randomizing phone is the mean of two estimates: the tracker's stay times its correction at the
site's crowding, and its inside scans over the scans one phone makes in the site's mean visit
(the first errs where the tracker joins or cuts phones, the second where a day's visits are
longer or shorter than the site's mean). With one sensor, or before the inside model is
trained, every stay gets the tracker's correction (``SiteModel.visitor_factor``), and the count
is raised by the share of the person-time in tracks as long as staff's (:func:`chain_factor`:
the tracker strings a busy shop's phones into such tracks, which the count drops and the
person-time keeps).

**Passers-by** = scans heard by the street-facing sensor in sessions that were not visits
(with two sensors or more: those that read outside), less the scans visitors leave there, over
the scans one passer-by's phone leaves there, over ``probing_share``, with a crowding term
(``PassbyCount``: defaults by the number of sensors). Counting scans, not devices, needs no
linking: a passer-by is heard in one scan, rarely two, and the tracker would only merge them.
With two sensors or more the figure is the geometric mean of that count and the scans' count of
``hub/passby_scans.py`` (each outside scan's chance of being a passer-by's, from the scans
around it, summed): the two err for different reasons. With one sensor the scans' count (its
own model) is the figure alone: the stays' count of one sensor does not follow the street.

**Dwell** of a visit: its first to last inside scan, plus the time a phone waits to scan
(``1 / scan_rate``: the stay began before the first scan and ended after the last one). With one
sensor the median takes the stay's first to last scan (:func:`visit_length`).

What is measured at the site (from the phones it can identify, ``hub/sitefit.py``): the
inside model, the scan rate, the share of sessions that are visits, the street-facing sensor.
What is a default (:data:`DEFAULTS`, documented in docs/metrics.md with the data it was chosen
on) and should be calibrated with a door count (``footfall calibrate counts``): the probing
share, the passers-by count's numbers (``PassbyCount``), the tracker's correction, and the model
part of the ranges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from footfall.hub import passby_scans
from footfall.hub.estimate_defaults import DEFAULTS, Z90, Defaults
from footfall.hub.passby_stays import passersby_spread, passing_scans
from footfall.hub.ranges import (
    PeriodEstimate,
    capture_figure,
    count_figure,
    dwell_figures,
    mean_dwell,
)
from footfall.hub.site_model import SiteModel

LONG_STAY_S = 4 * 3600.0  # a session this long is staff or equipment
MAX_WEIGHT = 3.0  # cap of the 1 / p_heard weight of a short visit


@dataclass
class ScanRecord:
    t: float
    peak: Mapping[str, float]  # sensor -> strongest RSSI of the scan
    # Whose scan it may be, before any linking: a fixed address's device, or a random one's
    # fingerprint (hub/passby_scans.py looks for other scans of it nearby).
    ident: str = ""


@dataclass
class Session:
    """One stay of one device: its scans, in time order."""

    key: str
    scans: list[ScanRecord]
    identified: bool = False  # a globally administered MAC: its identity is certain
    llr: float = 0.0
    p_visit: float = 0.0
    long_presence: bool = False  # its visits span LONG_STAY_S, whatever scans they list
    # A stay of the identity pass counts only once this time is final too: the end of the
    # estimation pass's stay that holds it (hub/analysis.py). Staff are found on that stay
    # once it has lasted hours; a piece counted as a passer-by before would be taken back.
    held_until: float | None = None
    # The first stay of a key the identity pass gave a track heard for half an hour that it was
    # in doubt about (LinkSettings.rekey_below): a phone that was already here, not arriving.
    continued: bool = False
    # A stay of the identity pass left out as staff (long_presence) because its visits are in a
    # randomizing track of the estimation pass as long as staff's: phones of one model the
    # tracker strung together, passers-by among them, not one device (hub/link.py).
    in_track: bool = False

    @property
    def first(self) -> float:
        return self.scans[0].t

    @property
    def last(self) -> float:
        return self.scans[-1].t

    @property
    def staff(self) -> bool:
        return self.long_presence or self.last - self.first >= LONG_STAY_S


def split_sessions(key: str, scans: Iterable[ScanRecord], gap_s: float, identified: bool = False) -> list[Session]:
    out: list[Session] = []
    cur: list[ScanRecord] = []
    for sc in sorted(scans, key=lambda s: s.t):
        if cur and sc.t - cur[-1].t > gap_s:
            out.append(Session(key, cur, identified))
            cur = []
        cur.append(sc)
    if cur:
        out.append(Session(key, cur, identified))
    return out


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 40.0), -40.0)))


def logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def shape(s: Session, passby_max_s: float) -> str:
    """What a session looks like over time: one scan, a few scans within a walk past, or longer."""
    if len(s.scans) == 1:
        return "single"
    return "short" if s.last - s.first <= passby_max_s else "long"


SHAPES = ("single", "short", "long")


def classify(sessions: Sequence[Session], model: SiteModel, defaults: Defaults | None = None) -> None:
    """Set every session's LLR (scans' RSSI plus its shape) and p_visit (see the module doc)."""
    d = defaults or DEFAULTS
    prior = logit(model.session_prior)
    for s in sessions:
        s.llr = sum(model.inside.llr(sc.peak) for sc in s.scans) + model.shape_llr.get(shape(s, d.passby_max_s), 0.0)
        s.p_visit = 0.0 if s.staff else sigmoid(s.llr + prior)


def dwell_of(s: Session, model: SiteModel, defaults: Defaults = DEFAULTS) -> float:
    """A visit's time inside: first to last inside scan, plus one wait for a scan (see module doc)."""
    inside = [sc.t for sc in s.scans if model.inside.llr(sc.peak) > 0] or [s.first, s.last]
    return (inside[-1] - inside[0] + 1.0 / model.scan_rate) * defaults.dwell_factor


def visit_length(s: Session, model: SiteModel, defaults: Defaults = DEFAULTS) -> float:
    """A visit's length for the median dwell and the dwell histogram: :func:`dwell_of`, except with
    one sensor. Its inside test (the signal of one sensor) takes the scans from the back of the
    shop for the street's and cuts visits at both ends (one-sensor tuning days: median 25 % short);
    there the stay's first to last scan, which adds only the seconds of walking in and out. The
    mean keeps :func:`dwell_of`: its tail is the stays the tracker joined, which the whole span
    lengthens further (one-sensor tuning days: mean 13 -> 16 % off with it)."""
    if not model.one_sensor:
        return dwell_of(s, model, defaults)
    return (s.last - s.first + 1.0 / model.scan_rate) * defaults.dwell_factor


def estimate(
    sessions: Sequence[Session],
    model: SiteModel,
    periods: Sequence[tuple[str, float, float]],
    defaults: Defaults = DEFAULTS,
    *,
    final_before: float | None = None,
    pass_sessions: Sequence[Session] | None = None,
) -> dict[str, PeriodEstimate]:
    """Estimates per period (label, start, end): sessions count in the period they began.

    Passers-by are counted on ``pass_sessions`` when given: the identity pass of the tracker
    (``LinkSettings.identity_bias``), which does not join a passer-by's scan into a visit.

    With ``final_before``, a session counts only once it is over (silent for ``gap_s`` before
    that time): a visit in progress can still turn out longer, inside or a walk past, and a
    figure that counted it early would have to be revised, even downwards. People still in the
    shop are what occupancy shows."""
    classify(sessions, model, defaults)
    passing = sessions if pass_sessions is None else pass_sessions
    if pass_sessions is not None:
        classify(pass_sessions, model, defaults)
    spread = defaults.one_sensor_spread if model.weak else defaults.spread
    scan_model = passby_scans.model_for(model) if periods else None
    p_model = passersby_spread(model, defaults, scan_model)
    if scan_model is not None:
        nb = passby_scans.Neighbours.of(passing, model)
        # How busy the street is against the shop is a feature of every scan: the widest period's,
        # on its stays still going too (a long visit's inside scans would otherwise all join the
        # ratio when it ends, and lower every scan's chance at once: a step back live).
        _, wide_start, wide_end = max(periods, key=lambda p: p[2] - p[1])
        settled = passby_scans.settled_before(final_before, defaults.session_gap_s, wide_end)
        busy = (
            passby_scans.street_vs_shop([s for s in passing if wide_start <= s.first < wide_end], nb, settled)
            if scan_model.street_vs_shop
            else 0.0
        )
        # The identity pass's stays in tracks as long as staff's, for a scan model fitted with them.
        tracks = [s for s in passing if s.in_track] if scan_model.tracks else []
    # The person-time (hub/dwell.py, which builds on the occupancy, which builds on this module):
    # with two sensors or more the dwell from Little's law, with one the visitors the tracker's
    # tracks as long as staff's hold (chain_factor).
    from footfall.hub.dwell import chain_pieces, little_figures, person_seconds

    chains = chain_pieces(sessions, model, defaults)
    out: dict[str, PeriodEstimate] = {}
    for label, start, end in periods:
        mine = counted_stays(sessions, start, end, final_before, defaults)
        v_sum = v_w2 = v_heard = 0.0
        v_certain: set[str] = set()
        dwell = _visit_dwells(mine, model, defaults)
        # visit_length is dwell_of unless the site has one sensor: no second pass over the scans.
        lengths = _visit_dwells(mine, model, defaults, visit_length) if model.one_sensor else dwell
        for s in mine:
            p = s.p_visit
            v_heard += p >= 0.5
            if s.identified and p >= 0.5:
                v_certain.add(s.key)
            if p > 0:
                # The tracker's part is not weighted by a stay's length: it cuts some visits into
                # pieces, and a piece's shortness would inflate the count. Visits not heard at all
                # are put back by the site's heard share, measured on identified phones
                # (sitefit.fit_site_model). See SiteModel.people.
                w = model.people(s, defaults)
                v_sum += w
                v_w2 += w * w
        counted = counted_stays(passing, start, end, final_before, defaults)
        pb_heard = sum(1 for s in counted if not s.continued and s.p_visit < 0.5)
        pb_scans = passing_scans(counted, model, defaults)
        person_s = person_seconds(mine, chains, model, start, end, defaults, final_before)
        visitors = v_sum
        if model.weak and chains and person_s > 0:
            chain_s = person_seconds([], chains, model, start, end, defaults, final_before)
            visitors = v_sum * chain_factor(chain_s / person_s)
        passersby = model.passersby(pb_scans, visitors, defaults)
        factor = model.passersby_factor(defaults)
        # Counting noise of the scans (Poisson), relative to what is left once visitors' are off.
        p_count = math.sqrt(pb_scans) * factor / passersby if passersby > 0 else 1.0
        counts: dict[str, float] = {}
        if scan_model is not None:
            asked = counted + counted_stays(tracks, start, end, final_before, defaults, staff=True)
            p_sum, p_var = passby_scans.expected_scans(asked, nb, busy, scan_model, settled)
            by_scans = p_sum * scan_model.factor(len(model.inside.sensors)) * model.calibration.passersby
            counts = {"stays": passersby, "scans": by_scans}
            s_count = math.sqrt(p_var) / p_sum if p_sum > 0 else 1.0
            if scan_model.combine == "alone":
                passersby, p_count = by_scans, s_count
            else:
                # Two counts whose errors come from different things (passby_scans): their
                # geometric mean, its counting noise half of both in log terms.
                p_count = 0.5 * math.hypot(p_count, s_count)
                passersby = math.sqrt(passersby * by_scans)
        v_rel = math.hypot(math.sqrt(v_w2) / v_sum if v_sum else 1.0, spread.visitors * spread.predictive)
        p_rel = math.hypot(p_count, p_model * spread.predictive)
        # The visitors heard are not a floor: the tracker cuts some phones' stays in pieces, and
        # in small shops its stays of randomizing phones outnumber the phones (tuning days 3, 6
        # and 9). The fixed-address phones heard visiting are: they are never pieced together.
        vis = count_figure(visitors, v_rel, v_heard, floor=float(len(v_certain)))
        pas = count_figure(passersby, p_rel, pb_heard)
        # Every scan counted taken off as visitors': 0 is the estimate, not a certainty.
        cleared = passersby <= 0 < pb_scans
        if cleared:
            # The scans' count may still say there were some (the mean of it and 0 is 0).
            pas.high = max(Z90 * math.sqrt(pb_scans) * factor, pb_heard, counts.get("scans", 0.0))
        cap_fig = capture_figure(vis, pas, v_rel, p_rel, cleared)
        dwells = dwell_figures(lengths, dwell, defaults, spread, with_mean=model.weak)
        little = None
        if not model.weak:
            count_rel = math.sqrt(v_w2) / v_sum if v_sum else 1.0
            little = little_figures(person_s, vis, count_rel, dwells, defaults)
        out[label] = PeriodEstimate(
            vis,
            pas,
            cap_fig,
            *(little or dwells),
            sessions=len(mine),
            passersby_counts=counts,
            dwell_from="stays" if little is None else "little",
            stays_mean_dwell_s=dwells[1].estimate,
        )
    return out


def chain_factor(chain_share: float) -> float:
    """How many more visitors a site with one sensor (or an untrained inside model) had than its
    count of stays says, from the share of its person-time in tracks as long as staff's.

    There the visitor count is the tracker's stays, each times one correction at the site's
    crowding, and the tracker strings phones of one model in a busy shop into tracks as long as
    staff's, which the count drops as staff: on the one-sensor tuning days the under-count
    followed the share of the person-time (``dwell.person_seconds``) in such tracks (41: 15 %
    of it, count -35 %; 44 as a shop of three times the dwell: 53-71 %, -39 to -55 %). The
    occupancy keeps their time (a track's inside scans). If the tracks' people stayed as long as
    the counted ones, the count would be short by the factor 1 / (1 - share); they stay longer
    (a long visit is what the tracker strings into a track, while its pieces outside it are
    counted), so the truth lies between no correction and that one, and the factor is their
    geometric mean, 1 / sqrt(1 - share). Nothing fitted; on the one-sensor tuning days and six
    more stores, 2.5 / 5 / 10 passers-by a visitor and ``--shops``, mean |error| 17.2 / 13.1 /
    19.7 / 18.1 % -> 14.8 / 10.4 / 15.9 / 10.6 % (docs/metrics.md, "One sensor's visitors and
    the tracks as long as staff's")."""
    return 1.0 / math.sqrt(1.0 - min(max(chain_share, 0.0), 0.99))


def fill_visit_dwell(
    model: SiteModel,
    sessions: Sequence[Session],
    start: float,
    end: float,
    final_before: float | None = None,
    defaults: Defaults = DEFAULTS,
) -> None:
    """Give a model without a measured mean visit (a site's first day: no earlier day's estimate
    to take it from, ``hub/link.py``) the mean dwell estimated on these stays, begun in [start,
    end) and over by ``final_before``: the scans a visitor's phone makes (SiteModel.people)."""
    if model.weak or model.visit_dwell_s > 0:
        return
    classify(sessions, model, defaults)
    mine = counted_stays(sessions, start, end, final_before, defaults)
    mean = mean_dwell(_visit_dwells(mine, model, defaults), defaults)
    if mean:
        model.visit_dwell_s = mean


def _visit_dwells(
    stays: Iterable[Session], model: SiteModel, defaults: Defaults, length: Callable[..., float] = dwell_of
) -> list[tuple[float, float]]:
    """(dwell, weight) of the stays that may be visits and have a length: ``length`` (dwell_of, or
    visit_length for the median) and p_visit."""
    return [(length(s, model, defaults), s.p_visit) for s in stays if s.p_visit > 0 and len(s.scans) >= 2]


def counted_stays(
    sessions: Sequence[Session],
    start: float,
    end: float,
    final_before: float | None,
    defaults: Defaults,
    *,
    staff: bool = False,
) -> list[Session]:
    """The stays a period counts: begun in it, not staff (unless ``staff``), over by
    ``final_before`` if given."""
    mine = [s for s in sessions if start <= s.first < end and (staff or not s.staff)]
    if final_before is not None:
        mine = [
            s
            for s in mine
            if max(s.last, s.held_until or s.last)
            <= final_before - (defaults.identified_gap_s if s.identified else defaults.session_gap_s)
        ]
    return mine
