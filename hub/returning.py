"""Who came back: the return rate from the visitors the hub can follow from one day to the next.

A random MAC cannot be followed across days, so the return rate is measured on the visitors
who can be, and the others are assumed to return alike (docs/metrics.md, "Return rate"). Two
kinds of phone can be followed:

* a phone with a fixed (globally administered) address: its MAC hash is the same every day;
* a randomizing phone that still asks for its remembered networks by name (directed probes:
  docs/device-estimation.md). A scan of it carries its fingerprint and the keyed hashes of the
  networks it asks for (the agent never sends a network's name), and that set is the phone's
  whatever its address. Its *signature* is a hash of the two. (Cunche, Kaafar and Boreli, "Linking
  wireless devices using information contained in Wi-Fi probe requests", 2012/2014, showed a
  device's list of networks asked for to be its fingerprint; they also found that people who
  share networks, a family or colleagues, share parts of their lists: why two networks or more
  and the phone's own fingerprint are required, and why a match can still be a housemate.)

A day's followed visitors (``estimated_visitors``, one row per day a followed visitor came) are
the stays the estimate calls visits; a signature joins them when it was heard from a visit for
two minutes or more (a walk past is shorter; a passer-by's scan the tracker gave a visitor's
track is not). An earlier visit of a signature is any visit that heard it (``network_visits``):
a short visit asks for its networks once or twice, and missing it read returners as new.
"""

from __future__ import annotations

import bisect
import hashlib
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from footfall.hub.estimate import Session
from footfall.hub.ranges import wilson

NETWORKS_MIN = 2  # one network alone (a carrier's hotspot, eduroam) is remembered by many phones
FOLLOWED_MIN_S = 120.0  # heard asking for its networks this long from a visit: a visitor
VISIT_P = 0.5  # a stay the estimate calls a visit


def followed_fixed(an: Any, start: float, stop: float) -> list[str]:
    """The day's visitors with a fixed address: stays the estimate calls visits, staff left out."""
    return sorted(
        {
            s.key
            for s in an.sessions
            if s.identified and start <= s.first < stop and not s.staff and s.p_visit >= VISIT_P
        }
    )


def signature(fp: str, networks: frozenset[str]) -> str:
    """A randomizing phone's key across days: its fingerprint and its networks' hashes, hashed."""
    digest = hashlib.sha256((fp + "|" + ",".join(sorted(networks))).encode()).hexdigest()
    return "net:" + digest[:24]


def network_scans(decisions: Sequence[Any], start: float, stop: float) -> dict[str, list[Any]]:
    """The scans (tracker decisions) of randomizing phones asking for two networks or more in
    [start, stop), by signature. A scan heard in part asks for some of the networks only: a set
    inside a larger one of the same fingerprint is left out."""
    scans: dict[tuple[str, frozenset[str]], list[Any]] = defaultdict(list)
    for d in decisions:
        sw = d.sweep
        if sw.randomized and len(sw.ssids) >= NETWORKS_MIN and start <= sw.first < stop:
            scans[(sw.fp, frozenset(sw.ssids))].append(d)
    by_fp: dict[str, list[frozenset[str]]] = defaultdict(list)
    for fp, nets in scans:
        by_fp[fp].append(nets)
    return {signature(fp, nets): ds for (fp, nets), ds in scans.items() if not any(nets < other for other in by_fp[fp])}


def followed_networks(an: Any, start: float, stop: float) -> tuple[list[str], list[str]]:
    """(followed, heard): the signatures of randomizing phones asking for their networks that
    are the day's followed visitors, and every signature heard from a visit that day.

    Stays are the identity pass's (``an.identity_sessions``, classified by the estimate): it
    keeps a key to one person where it can."""
    scans = network_scans(an.decisions, start, stop)
    if not scans:
        return [], []
    stays = _stays_by_key(an.identity_sessions)
    followed: set[str] = set()
    heard: set[str] = set()
    for sig, ds in scans.items():
        times = [d.sweep.first for d in ds if _in_visit(stays.get(d.key), d.sweep.first)]
        if not times:
            continue
        heard.add(sig)
        if max(times) - min(times) >= FOLLOWED_MIN_S:
            followed.add(sig)
    return sorted(followed), sorted(heard)


def _stays_by_key(sessions: Sequence[Session]) -> dict[str, tuple[list[float], list[Session]]]:
    """Each tracked key's stays in time order, with their start times (for a bisect)."""
    out: dict[str, list[Session]] = defaultdict(list)
    for s in sorted(sessions, key=lambda s: s.first):
        if not s.identified:
            out[s.key].append(s)
    return {k: ([s.first for s in ss], ss) for k, ss in out.items()}


def _in_visit(stays: tuple[list[float], list[Session]] | None, t: float) -> bool:
    if stays is None:
        return False
    firsts, ss = stays
    i = bisect.bisect_right(firsts, t) - 1
    if i < 0:
        return False
    s = ss[i]
    return s.first <= t <= s.last and not s.staff and s.p_visit >= VISIT_P


def store(conn: sqlite3.Connection, day: str, followed: Sequence[str], heard: Sequence[str]) -> None:
    """The day's followed visitors and the signatures heard from its visits, replacing the day's."""
    conn.execute("DELETE FROM estimated_visitors WHERE day = ?", (day,))
    conn.executemany("INSERT INTO estimated_visitors (device_key, day) VALUES (?, ?)", [(k, day) for k in followed])
    conn.execute("DELETE FROM network_visits WHERE day = ?", (day,))
    conn.executemany("INSERT INTO network_visits (signature, day) VALUES (?, ?)", [(k, day) for k in heard])


def return_rate(conn: sqlite3.Connection, day: str, keys: Sequence[str]) -> dict[str, Any]:
    """Return rate from the visitors the hub can follow across days: their share that visited on
    an earlier day, with a Wilson 90 % interval.

    An earlier visit is one that day's estimate counted (``estimated_visitors``), one the agents
    classed a visit (days linked before that table), or a visit that heard the signature's
    networks (``network_visits``). The agents' class alone missed a fifth to a third of the
    returning visitors' earlier visits on the simulated days (short stays and stays mostly heard
    from the door), which read the return rate 4-8 points low."""
    if not keys:
        return rate_figures(0, 0, 0)
    back = 0
    for i in range(0, len(keys), 300):
        chunk = list(keys[i : i + 300])
        marks = ", ".join("?" * len(chunk))
        back += conn.execute(
            f"SELECT count(*) FROM (SELECT device_key FROM estimated_visitors WHERE device_key IN ({marks}) "
            f"AND day < ? UNION SELECT device_key FROM visits WHERE device_key IN ({marks}) "
            f"AND class = 'visitor' AND day < ? UNION SELECT signature FROM network_visits "
            f"WHERE signature IN ({marks}) AND day < ?)",
            [*chunk, day, *chunk, day, *chunk, day],
        ).fetchone()[0]
    return rate_figures(back, len(keys), sum(1 for k in keys if k.startswith("net:")))


def rate_figures(back: float, followed: int, networks: int) -> dict[str, Any]:
    """The return rate's fields: ``back`` of the ``followed`` visitors came before (of them,
    ``networks`` followed by their networks), with the Wilson 90 % interval; None without any."""
    if not followed:
        return {
            "return_rate": None,
            "return_rate_low": None,
            "return_rate_high": None,
            "return_rate_heard": 0,
            "return_rate_networks": 0,
        }
    lo, hi = wilson(back, followed)
    return {
        "return_rate": round(back / followed, 4),
        "return_rate_low": round(lo, 4),
        "return_rate_high": round(hi, 4),
        "return_rate_heard": int(followed),
        "return_rate_networks": int(networks),
    }
