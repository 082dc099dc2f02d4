"""The return rate's earlier visits: what the hub's estimate counted as a visit, not only what an
agent classed one (docs/metrics.md, "Return rate"). Real SQLite files, the hub's own schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from footfall.hub import retention, returning, store
from footfall.hub.config import HubConfig

DAY = 86400.0
T0 = 1_793_000_000.0  # 2026-10-26 UTC


def _visit(conn: sqlite3.Connection, key: str, day: str, cls: str) -> None:
    conn.execute(
        """INSERT INTO visits (site, device, device_key, randomized, first_seen, last_seen, dwell_s, inside_s,
                               class, long_stay, best_sensor, sensors, n_sensor_visits, day, hour)
           VALUES ('st', ?, ?, 0, ?, ?, 60, 0, ?, 0, 's1', '["s1"]', 1, ?, 12)""",
        (key, key, T0, T0 + 60, cls, day),
    )


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = store.connect(tmp_path / "hub.db")
    # a: came yesterday for two minutes, which the agent classed a passer-by and the hub's
    # estimate a visit; b: a visit by both; c: walked past yesterday (neither); d: new today;
    # e: counted by the estimate today only (today is not "before").
    _visit(c, "a", "2026-10-26", "passerby")
    _visit(c, "b", "2026-10-26", "visitor")
    _visit(c, "c", "2026-10-26", "passerby")
    c.executemany(
        "INSERT INTO estimated_visitors (device_key, day) VALUES (?, ?)",
        [("a", "2026-10-26"), ("b", "2026-10-26"), ("e", "2026-10-27")],
    )
    return c


def test_an_earlier_visit_is_one_the_estimate_or_the_agent_counted(conn: sqlite3.Connection) -> None:
    out = returning.return_rate(conn, "2026-10-27", ["a", "b", "c", "d", "e"])
    assert out["return_rate"] == 0.4 and out["return_rate_heard"] == 5
    assert out["return_rate_low"] < 0.4 < out["return_rate_high"]
    # A database linked before the estimate kept its visitors still reads the agents' class.
    conn.execute("DELETE FROM estimated_visitors")
    assert returning.return_rate(conn, "2026-10-27", ["a", "b", "c", "d"])["return_rate"] == 0.25
    assert returning.return_rate(conn, "2026-10-27", [])["return_rate"] is None


def test_the_estimated_visitors_are_kept_as_long_as_the_visits(conn: sqlite3.Connection) -> None:
    config = HubConfig(site="st")
    config.retention.raw_days = 1
    retention.apply(conn, config, now=T0 + 1.5 * DAY)  # cutoff: 2026-10-26 is kept
    assert conn.execute("SELECT count(*) FROM estimated_visitors").fetchone()[0] == 3
    retention.apply(conn, config, now=T0 + 2.5 * DAY)
    assert [r[0] for r in conn.execute("SELECT day FROM estimated_visitors")] == ["2026-10-27"]


def test_unique_visitors_of_a_period_take_off_the_repeat_visits_of_followed_visitors(
    conn: sqlite3.Connection,
) -> None:
    """Two days of 100 estimated visitors each; of the followed ones, 'b' came both days: the
    period has 3 distinct of 4 visitor-days, so 150 unique visitors, not 200."""
    import json
    from datetime import date

    from footfall.hub import figures

    for day in ("2026-10-26", "2026-10-27"):
        payload = {
            "visitors": 100.0,
            "visitors_low": 90.0,
            "visitors_high": 110.0,
            "return_rate": 0.5,
            "return_rate_heard": 2,
        }
        conn.execute(
            "INSERT INTO estimates (day, hour, figures, watermark, computed) VALUES (?, -1, ?, 0, 0)",
            (day, json.dumps(payload)),
        )
    conn.execute("DELETE FROM estimated_visitors")
    conn.executemany(
        "INSERT INTO estimated_visitors (device_key, day) VALUES (?, ?)",
        [("a", "2026-10-26"), ("b", "2026-10-26"), ("b", "2026-10-27"), ("e", "2026-10-27")],
    )
    both = figures.period_totals(conn, date(2026, 10, 26), date(2026, 10, 27))
    assert both is not None and both["visitors"] == 200.0
    assert both["unique_visitors"] == 150.0
    # Its range: the visitors' times the interval of the share of first visits (3 of 4).
    assert both["unique_visitors_low"] < 150.0 < both["unique_visitors_high"] <= 220.0
    one = figures.period_totals(conn, date(2026, 10, 27), date(2026, 10, 27))
    assert one is not None and one["unique_visitors"] == 100.0


def _scan(key: str, t: float, fp: str, networks: set[str], randomized: bool = True):
    from footfall.hub.derandomize import SweepDecision
    from footfall.hub.sweeps import Sweep

    sw = Sweep(fp, (0, 1, 50), t, t + 0.1, None, None, randomized, ssids=set(networks))
    return SweepDecision(sw, key, p_inside=0.9, p_new=0.0)


def _stay(key: str, first: float, last: float, p_visit: float):
    from footfall.hub.estimate import ScanRecord, Session

    return Session(key, [ScanRecord(first, {"s1": -50}), ScanRecord(last, {"s1": -50})], p_visit=p_visit)


def test_randomizing_phones_are_followed_by_the_networks_they_ask_for() -> None:
    """A randomizing phone asking for {home, office} from a ten-minute visit is a followed
    visitor; a scan of it heard in part ({home}) is not another one; a phone heard asking for
    its networks for a minute only is an earlier visit but not followed; one asking from a stay
    that is no visit (a passer-by), or for one network alone, or with a fixed address, is
    neither (a fixed address is followed by its MAC hash)."""
    from footfall.hub.analysis import Analysis
    from footfall.hub.estimate import SiteModel

    decisions = [
        _scan("k1", T0 + 10, "fpA", {"home", "office"}),
        _scan("k1", T0 + 200, "fpA", {"home"}),  # heard in part
        _scan("k1", T0 + 400, "fpA", {"home", "office"}),
        _scan("k2", T0 + 1000, "fpA", {"gym", "cafe"}),  # a one-minute look-in
        _scan("k2", T0 + 1060, "fpA", {"gym", "cafe"}),
        _scan("k3", T0 + 2000, "fpB", {"flat", "work"}),  # walked past
        _scan("k3", T0 + 2300, "fpB", {"flat", "work"}),
        _scan("k4", T0 + 3000, "fpB", {"eduroam"}),  # one network: many phones remember it
        _scan("k4", T0 + 3500, "fpB", {"eduroam"}),
        _scan("k5", T0 + 4000, "fpC", {"a", "b"}, randomized=False),
        _scan("k5", T0 + 4500, "fpC", {"a", "b"}, randomized=False),
    ]
    stays = [
        _stay("k1", T0, T0 + 600, 0.9),
        _stay("k2", T0 + 1000, T0 + 1060, 0.8),
        _stay("k3", T0 + 2000, T0 + 2300, 0.1),
        _stay("k4", T0 + 3000, T0 + 3500, 0.9),
        _stay("k5", T0 + 4000, T0 + 4500, 0.9),
    ]
    an = Analysis({}, stays, SiteModel(), None, decisions, identity_sessions=stays)
    followed, heard = returning.followed_networks(an, T0, T0 + DAY)
    home = returning.signature("fpA", frozenset({"home", "office"}))
    look_in = returning.signature("fpA", frozenset({"gym", "cafe"}))
    assert followed == [home]
    assert heard == sorted([home, look_in])
    assert home.startswith("net:") and "home" not in home  # no network hash on its own at rest
    # Another day's scans outside the window are not this day's.
    assert returning.followed_networks(an, T0 + DAY, T0 + 2 * DAY) == ([], [])


def test_a_phone_followed_by_its_networks_returns_when_an_earlier_visit_heard_them(
    conn: sqlite3.Connection,
) -> None:
    sig, new = "net:" + "a" * 24, "net:" + "b" * 24
    returning.store(conn, "2026-10-26", [], [sig])  # heard from a short visit, not followed then
    returning.store(conn, "2026-10-27", ["b", sig, new], [sig, new])
    out = returning.return_rate(conn, "2026-10-27", ["b", sig, new])
    assert out["return_rate_heard"] == 3 and out["return_rate_networks"] == 2
    assert out["return_rate"] == round(2 / 3, 4)  # b (an earlier visit) and sig came back
    # Relinking a day replaces its rows; retention drops them with the visits.
    returning.store(conn, "2026-10-27", ["b"], [])
    assert conn.execute("SELECT count(*) FROM network_visits WHERE day = '2026-10-27'").fetchone()[0] == 0
    config = HubConfig(site="st")
    config.retention.raw_days = 1
    retention.apply(conn, config, now=T0 + 2.5 * DAY)
    assert conn.execute("SELECT count(*) FROM network_visits").fetchone()[0] == 0


def test_a_real_phone_keeps_one_signature_across_its_random_addresses(captures: list[Path]) -> None:
    """The real Oppo Find X3 Neo capture: the phone asks for five networks by name from six
    random addresses; through the agent and the tracker every one of those scans has one
    signature, so the phone can be followed across days whatever address it uses."""
    from footfall.hub.derandomize import Linker, LinkSettings
    from footfall.tools.evaluate import load_captures

    oppo = [p for p in captures if p.name.startswith("OppoFindX3Neo")]
    if not oppo:
        pytest.skip("the Oppo capture is not among the real captures")
    visits, _, _ = load_captures(oppo)
    linker = Linker(LinkSettings(), record=True)
    linker.feed(sorted(visits, key=lambda v: (v["first_seen"], v["id"])))
    sigs = returning.network_scans(linker.decisions or [], 0.0, float("inf"))
    assert len(sigs) == 1
    (ds,) = sigs.values()
    assert len({d.sweep.device for d in ds}) >= 6
    assert all(len(d.sweep.ssids) == 5 for d in ds)
