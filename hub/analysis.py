"""A stretch of sensor visits in, devices, stays and the site's model out.

The one place where the hub's steps meet, used alike by the hub's periodic job
(``hub/link.py``, on a day of stored sensor visits), by :func:`footfall.hub.occupancy.people_per_window`
(on visits straight from an agent, no database) and by ``footfall evaluate``:

1. link the visits into devices (``hub/derandomize.py``), with the site's inside model and,
   when the site has enough phones it can identify, the link model measured on them
   (``hub/linkmodel.py``);
2. cut every device's scans into stays (:class:`footfall.hub.estimate.Session`): tracked
   devices from the tracker's sweeps, globally administered MACs from their own per-burst
   evidence (``hub/sweeps.py`` ``scans_of``);
3. without a site model given, fit one on these very visits first (a first tracker pass
   without the inside model gives the stays to learn "inside" from).

Opening hours (``is_open``) come from the hub's configuration or, without one, from the data
(:func:`infer_open`: the hours in which identified phones started stays of a few minutes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from footfall.hub import linkmodel
from footfall.hub.derandomize import Linker, LinkSettings, LinkStats, SweepDecision
from footfall.hub.estimate import DEFAULTS, LONG_STAY_S, ScanRecord, Session, SiteModel, split_sessions
from footfall.hub.sitefit import fit_site_model
from footfall.hub.sweeps import scans_of

SESSION_GAP_S = 600.0  # the agents' visit gap: a phone silent longer has left
# A phone with a fixed address heard again within half an hour is the same visit: an idle phone
# can be silent for over ten minutes, and coming back that soon is rare (identity is certain,
# so a short silence says little).
IDENTIFIED_GAP_S = DEFAULTS.identified_gap_s
MIN_IDENTIFIED = 10  # identified stays before the site's measured link model is used


def _peak(rssi: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in rssi.items() if "/" not in k}


def sessions_from(
    decisions: Iterable[SweepDecision], visits: Iterable[Mapping[str, Any]], gap_s: float = SESSION_GAP_S
) -> list[Session]:
    """Stays of tracked devices (from their sweeps) and of identified MACs (from their scans)."""
    by_key: dict[str, list[ScanRecord]] = defaultdict(list)
    for d in decisions:
        # A sweep without a fingerprint (the agent sends "") is nobody else's (passby_scans).
        by_key[d.key].append(ScanRecord(d.sweep.first, d.sweep.peak, "fp:" + d.sweep.fp if d.sweep.fp else ""))
    out: list[Session] = []
    continued = {d.key for d in decisions if d.rekeyed}
    for key, scans in by_key.items():
        stays = split_sessions(key, scans, gap_s)
        if key in continued:
            stays[0].continued = True
        out += stays
    stable: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for v in visits:
        if not v.get("randomized", True):
            stable[v["device"]].append(v)
    for device, vs in stable.items():
        scans = [ScanRecord(t, _peak(r), "mac:" + device) for t, r in scans_of(vs)]
        if _presence_s(vs) >= LONG_STAY_S:
            # Present for hours (staff, equipment): one stay, however often it fell silent.
            out.append(Session(device, scans, identified=True, long_presence=True))
        else:
            out += split_sessions(device, scans, max(gap_s, IDENTIFIED_GAP_S), identified=True)
    out.sort(key=lambda s: s.first)
    return out


def _presence_s(visits: Sequence[Mapping[str, Any]]) -> float:
    """Hours a device was present in the day: its visits' spans, silences over the visit gap not
    counted. Staff are present for hours whatever their breaks; a shopper who comes back in the
    afternoon is present for two short visits, not for the hours between them."""
    spans = sorted((float(v["first_seen"]), float(v["last_seen"])) for v in visits)
    total = 0.0
    start, end = spans[0]
    for a, b in spans[1:]:
        if a - end > SESSION_GAP_S:
            total += end - start
            start = a
        end = max(end, b)
    return total + end - start


def infer_open(visits: Iterable[Mapping[str, Any]], tz: tzinfo) -> Callable[[float], bool]:
    """Opening hours guessed from the data: local hours in which identified phones began stays of
    2 minutes to 4 hours, widened by an hour (shops open the same hours every day)."""
    starts: list[float] = []
    for stay in linkmodel.identified_visits(visits):
        starts.append(stay[0].t)
    if len(starts) < 5:
        return lambda t: True
    hours = sorted(datetime.fromtimestamp(t, tz).hour + datetime.fromtimestamp(t, tz).minute / 60 for t in starts)
    lo = hours[max(int(0.02 * len(hours)), 0)]
    hi = hours[min(int(0.98 * len(hours)), len(hours) - 1)]

    def is_open(t: float) -> bool:
        local = datetime.fromtimestamp(t, tz)
        h = local.hour + local.minute / 60
        return lo - 0.5 <= h <= hi + 1.0

    return is_open


def hours_open(hours: tuple[float, float], tz: tzinfo) -> Callable[[float], bool]:
    """``is_open`` of configured opening hours (local, e.g. (10.0, 21.0))."""
    lo, hi = hours

    def is_open(t: float) -> bool:
        local = datetime.fromtimestamp(t, tz)
        h = local.hour + local.minute / 60 + local.second / 3600
        return lo <= h <= hi

    return is_open


@dataclass
class Analysis:
    keys: dict[str, str]  # visit id -> device key (the identity pass)
    sessions: list[Session]  # stays of the estimation pass: visitors, dwell, occupancy
    model: SiteModel
    link_model: linkmodel.LinkModel | None
    decisions: list[SweepDecision] = field(default_factory=list)
    stats: LinkStats | None = None
    # Stays of the identity pass (passers-by are counted on them) and the estimation pass's
    # keys (to find a stay's visits, e.g. staff recognised on an estimation stay).
    identity_sessions: list[Session] = field(default_factory=list)
    estimation_keys: dict[str, str] = field(default_factory=dict)


def fit_models(
    visits: Sequence[Mapping[str, Any]],
    is_open: Callable[[float], bool],
    settings: LinkSettings | None = None,
    fitted_on: str = "",
) -> tuple[SiteModel, linkmodel.LinkModel | None]:
    """The site model and link model measured on these visits (time-ordered)."""
    stays = linkmodel.identified_visits(visits, is_open)
    # The site's own measurement, shrunk toward the default while it rests on few visits; with
    # none to measure on (every phone randomizes), the default measured on the tuning seeds.
    link_model = linkmodel.DEFAULT
    if len(stays) >= MIN_IDENTIFIED:
        site = linkmodel.fit(stays, source=f"{len(stays)} identified visits {fitted_on}".strip())
        link_model = linkmodel.blend(site, linkmodel.DEFAULT)
    model = fit_site_model(
        first_pass_stays(visits, link_model, settings),
        is_open,
        sweeps_per_visitor=link_model.sweeps_per_visitor if link_model else 0.0,
        fitted_on=fitted_on,
    )
    return model, link_model


def first_pass_stays(
    visits: Sequence[Mapping[str, Any]], link_model: linkmodel.LinkModel | None, settings: LinkSettings | None = None
) -> list[Session]:
    """The stays of a tracker pass without the inside model (there is none yet): what the site
    model is fitted on."""
    first = Linker(settings, record=True, model=link_model)
    first.feed(visits)
    return sessions_from(first.decisions or [], visits)


def analyse(
    visits: Iterable[Mapping[str, Any]],
    *,
    is_open: Callable[[float], bool],
    model: SiteModel | None = None,
    link_model: linkmodel.LinkModel | None = None,
    settings: LinkSettings | None = None,
    warm: tuple[Iterable[Mapping[str, Any]], Mapping[str, str]] | None = None,
    fitted_on: str = "",
) -> Analysis:
    """Link ``visits`` and cut them into stays; fit the models on them when none are given.

    ``warm``: visits already linked just before these, with their keys (continuity across a
    window boundary: a phone heard before midnight keeps its device)."""
    vs = sorted(visits, key=lambda v: (v["first_seen"], v["id"]))
    if warm is not None:
        warm = (list(warm[0]), warm[1])  # both passes restore from it
    if model is None:
        model, link_model = fit_models(vs, is_open, settings, fitted_on)
    inside = model.inside
    settings = settings or LinkSettings()
    passes = []
    # Two passes (see LinkSettings.identity_bias): the estimation pass joins generously and the
    # estimates correct for it; the identity pass keeps a key to one person where it can.
    for s in (settings, settings.identity()):
        linker = Linker(s, inside=lambda sw: inside.p_inside(sw.peak), record=True, model=link_model)
        if warm is not None:
            linker.restore(*warm)
        passes.append((linker.feed(vs), linker.decisions or [], linker.stats))
    (est_keys, decisions, _), (keys, id_decisions, id_stats) = passes
    sessions = sessions_from(decisions, vs)
    identity_sessions = sessions_from(id_decisions, vs)
    _hold_pieces(identity_sessions, id_decisions, decisions, sessions)
    return Analysis(
        keys,
        sessions,
        model,
        link_model,
        id_decisions,
        id_stats,
        identity_sessions=identity_sessions,
        estimation_keys=est_keys,
    )


def _hold_pieces(
    pieces: Sequence[Session],
    id_decisions: Sequence[SweepDecision],
    decisions: Sequence[SweepDecision],
    stays: Sequence[Session],
) -> None:
    """Mark each tracked stay of the identity pass with the end of the estimation pass's stay that
    holds its first sweep (``Session.held_until``): the two passes decide on the same sweeps."""
    est_key = {d.sweep.device: d.key for d in decisions}
    sweep_at = {(d.key, d.sweep.first): d.sweep.device for d in id_decisions}
    by_key: dict[str, list[Session]] = defaultdict(list)
    for s in stays:
        by_key[s.key].append(s)
    for piece in pieces:
        if piece.identified:
            continue
        sweep = sweep_at.get((piece.key, piece.first), "")
        for stay in by_key.get(est_key.get(sweep, ""), ()):
            if stay.first <= piece.first <= stay.last:
                # No longer than it takes to call a stay staff: by then the staff's own pieces
                # are left out (hub/link.py), and a stay heard until midnight must not keep a
                # passer-by out of the day's last count.
                piece.held_until = min(stay.last, stay.first + LONG_STAY_S)
                break


def day_bounds(day: str, tz: tzinfo) -> tuple[float, float]:
    """UNIX start and end of a local day (23, 24 or 25 hours long)."""
    d = datetime.fromisoformat(day).replace(tzinfo=tz)
    return d.timestamp(), (d + timedelta(days=1)).timestamp()
