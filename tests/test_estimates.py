"""Every dashboard figure against the truth over all people, on held-out simulated days.

The whole pipeline runs (agents, the hub's ingest code, the link job, the dashboard API), as
``footfall evaluate --metrics`` does. The bounds are the ones measured on the held-out seeds
(docs/metrics.md, "How well"), with a margin: a test fails when a figure drifts past what the
product documents, not when it misses the issue's aim. The ranges must contain the truth.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from footfall.tools.evaluate_metrics import BOUNDS, evaluate_run
from footfall.tools.evaluate_pipeline import HELD_OUT_SEEDS, Scenario, simulate

# Bounds per figure on this held-out store (relative error; return rate in points): its
# measured errors on truth model 3 with the visitor weights of 2026-12-05 (docs/metrics.md,
# "How well": visitors +6/+15/-1 %, passers-by -6/+4/-14 %, capture rate +10/+8/+13 %, median
# dwell -19/+9/+2 %, mean dwell -6/-13/-8 %, return rate +5.9/+6.7 pt; passers-by and capture
# rate with the count of 2026-12-06: -7/+4/-21 % and +11/+9/+20 %) with a margin. A test that fails here means the
# estimates got worse than the documented figures, not that they missed the aim of 10 %.
DOCUMENTED = {
    "visitors": 0.30,
    "passersby": 0.35,
    "capture_rate": 0.30,
    "median_dwell_s": 0.35,
    "mean_dwell_s": 0.20,
    "return_rate": 0.10,
    "unique_visitors": 0.20,  # the store's days so far: +8.4 / +3.5 % (2026-12-06)
    "median_dwell_days": 0.25,  # the store's days so far, the days' histograms: -16.9 / -16.0 % (2026-12-06)
}


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory: pytest.TempPathFactory):
    # Held-out seed 12: a small store (scale 0.5), 80 % randomizing phones, 2 sensors, 3 days
    # (the last two have history: a site model fitted on earlier days, and returning visitors).
    sc = Scenario(seed=12, scale=0.5, randomized_share=0.8, sensors=2, days=3)
    assert sc.seed in HELD_OUT_SEEDS
    work = Path(tmp_path_factory.mktemp("estimates"))
    return work, evaluate_run(simulate(sc, work), work)


@pytest.fixture(scope="module")
def held_out_days(held_out_run):
    return held_out_run[1]


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_figure_within_its_documented_bound(held_out_days, name: str) -> None:
    kind, _ = BOUNDS[name]
    checked = 0
    for day in held_out_days:
        f = day.figures[name]
        if f.truth is None:
            continue  # no return rate on a first day
        checked += 1
        err = f.error(kind)
        assert err is not None, (day.day, name, f)
        print(f"{day.day} {name}: truth {f.truth:.3f} estimate {f.estimate:.3f} [{f.low}, {f.high}] error {err:+.3f}")
        assert abs(err) <= DOCUMENTED[name], (day.day, name, f)
    assert checked


def test_ranges_contain_the_truth_on_most_days(held_out_days) -> None:
    covered = total = 0
    for day in held_out_days:
        for f in day.figures.values():
            if f.covered is None:
                continue
            total += 1
            covered += bool(f.covered)
    assert total >= 15
    assert covered / total >= 0.8, (covered, total)


def test_heard_counts_are_shown_beside_the_estimates(held_out_days) -> None:
    for day in held_out_days:
        v = day.figures["visitors"]
        assert v.heard is not None and v.low is not None and v.low <= v.estimate <= v.high
        # The estimate corrects for people not heard: it is not the heard count.
        assert v.estimate != v.heard


def test_a_period_median_dwell_agrees_with_its_days(held_out_run) -> None:
    """The engagement page's median over several days adds up the days' dwell histograms; each
    day's is stretched to that day's estimated median (hub/link.py ``_dwell_hist``), so the
    period's median lies among its days' and the histogram's own median is the day's."""
    from footfall.hub.metrics import _histogram_median, dwell_bin
    from footfall.tools.evaluate_pipeline import api_client

    work, days = held_out_run
    dates = [d.day for d in days]
    conn = sqlite3.connect(work / "hub-12.db")
    try:
        figures = {d: json.loads(f) for d, f in conn.execute("SELECT day, figures FROM estimates WHERE hour = -1")}
    finally:
        conn.close()
    medians = [figures[d]["median_dwell_s"] for d in dates]
    for d in dates:
        own = _histogram_median([round(x * 1000) for x in figures[d]["dwell_hist"]])
        # Read off bins (linear inside one): the same bin as the day's median, not the same value.
        assert own is not None and dwell_bin(own) == dwell_bin(figures[d]["median_dwell_s"]), d
    # A second past the clock evaluate_run read the days at: its API key is named after it.
    client = api_client(work / "hub-12.db", _end_of(dates[-1]) + 1.0)
    r = client.get("/api/engagement", params={"start": dates[0], "end": dates[-1], "granularity": "day"})
    assert r.status_code == 200, r.text
    week = r.json()
    print(medians, week["median_dwell_s"])
    assert min(medians) * 0.95 <= week["median_dwell_s"] <= max(medians) * 1.05
    assert week["median_dwell_s_low"] < week["median_dwell_s"] < week["median_dwell_s_high"]


def _end_of(day: str) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() + 86400 - 60


def test_occupancy_beats_counting_macs(held_out_days) -> None:
    for day in held_out_days:
        o = day.occupancy
        print(day.day, {k: round(v, 3) for k, v in o.items()})
        assert o["mae_occupied"] < o["strong_macs_mae_occupied"] / 3
        assert o["pearson"] > o["macs_pearson"]
        assert o["pearson"] > 0.8


def test_randomizing_visitors_are_followed_across_days_by_their_networks(held_out_run) -> None:
    """On the store's later days the return rate also follows randomizing phones by the networks
    they ask for (hub/returning.py): some of the day's followed visitors are such phones, and
    some of them were heard from an earlier day's visit."""
    work, days = held_out_run
    conn = sqlite3.connect(work / "hub-12.db")
    try:
        dates = [d.day for d in days]
        followed = {
            d: {k for (k,) in conn.execute("SELECT device_key FROM estimated_visitors WHERE day = ?", (d,))}
            for d in dates
        }
        heard = {
            d: {k for (k,) in conn.execute("SELECT signature FROM network_visits WHERE day = ?", (d,))} for d in dates
        }
        figures = {d: json.loads(f) for d, f in conn.execute("SELECT day, figures FROM estimates WHERE hour = -1")}
    finally:
        conn.close()
    back = 0
    for i, d in enumerate(dates):
        by_networks = {k for k in followed[d] if k.startswith("net:")}
        assert by_networks and by_networks <= heard[d], d
        assert figures[d]["return_rate_networks"] == len(by_networks)
        assert figures[d]["return_rate_heard"] == len(followed[d])
        back += len(by_networks & set().union(*(heard[e] for e in dates[:i])))
    assert back >= 1


def test_a_site_can_turn_following_by_networks_off(held_out_run, tmp_path: Path) -> None:
    """hub.toml ``follow_networks = false``: relinked, the days keep no network signature and
    their return rate rests on fixed addresses alone."""
    from footfall.hub import link
    from footfall.hub.config import HubConfig

    work, _ = held_out_run
    db = tmp_path / "hub.db"
    conn = sqlite3.connect(work / "hub-12.db")
    try:
        conn.execute("VACUUM INTO ?", (str(db),))  # a copy: the module's other tests read the original
    finally:
        conn.close()
    config = HubConfig(site="demo", timezone="UTC", db=str(db), link_every_s=0, hours="10-21", follow_networks=False)
    config.retention.raw_days = 100_000
    conn = sqlite3.connect(db)
    try:
        link.relink(conn, config, since=0)
        assert conn.execute("SELECT count(*) FROM network_visits").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM estimated_visitors WHERE device_key LIKE 'net:%'").fetchone()[0] == 0
        nets = [json.loads(f).get("return_rate_networks") for (f,) in conn.execute("SELECT figures FROM estimates")]
        assert set(nets) <= {0, None}
    finally:
        conn.close()


# One sensor (held-out seed 25: 300 visitors, 95 % randomizing, one day): the count raised by the
# share of the person-time in tracks as long as staff's (estimate.chain_factor) and the scans'
# count asking about those tracks' scans (passby_scans.candidates). Measured on 2026-12-06,
# late: visitors -19.5 % (-30.8 % before both), passers-by -11.1 % (-32.5 %), capture rate -8.0 %.
ONE_SENSOR_DOCUMENTED = {"visitors": 0.27, "passersby": 0.22, "capture_rate": 0.18}


def test_a_one_sensor_store_within_its_documented_bounds(tmp_path: Path) -> None:
    sc = Scenario(seed=25, scale=1.0, randomized_share=0.95, sensors=1, days=1)
    assert sc.seed in HELD_OUT_SEEDS
    (day,) = evaluate_run(simulate(sc, tmp_path), tmp_path)
    for name, bound in ONE_SENSOR_DOCUMENTED.items():
        f = day.figures[name]
        err = f.error(BOUNDS[name][0])
        assert err is not None and abs(err) <= bound, f"{name}: {err:+.3f} past {bound}"
        assert f.covered, f"{name}: range {f.low}-{f.high} misses the truth {f.truth}"
