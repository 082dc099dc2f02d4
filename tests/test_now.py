""" "Now in store" from the live presence counts scaled by the site's own people-per-count ratio
(hub/now.py), on a real hub database."""

from __future__ import annotations

from pathlib import Path

from footfall.hub import store
from footfall.hub.now import MIN_MINUTES, SETTLED_S, SMOOTH_MINUTES, fit_ratio, now_people

T0 = 1_793_000_000 // 60 * 60  # a minute boundary


def fill(conn, minutes: int, ratio: float = 0.4) -> None:
    """Occupancy and presence for ``minutes`` minutes from T0: people = ratio x count, +-0.5."""
    for i in range(minutes):
        m = T0 + 60 * i
        count = 5 + i % 7
        conn.execute(
            "INSERT INTO occupancy (minute, people) VALUES (?, ?)", (m, ratio * count + (0.5 if i % 2 else -0.5))
        )
        for sensor, inside in (("s1", count), ("s2", count - 3)):  # zones overlap: the largest counts
            conn.execute(
                "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', ?, ?, ?, ?)",
                (sensor, m + 10, inside + 2, inside),
            )
    conn.commit()


def test_ratio_from_settled_minutes_and_people_now(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / "hub.db")
    fill(conn, 600)
    last = T0 + 60 * 599
    fit = fit_ratio(conn, last + 60, minutes=1)
    # Only minutes SETTLED_S before the latest estimated one count: their visits have all arrived.
    assert fit is not None and fit["until"] == last - SETTLED_S
    assert abs(fit["ratio"] - 0.4) < 0.02 and 0.4 < fit["sd"] < 0.6
    # A fresh presence report with 20 MACs inside: about 8 people, with a range.
    conn.execute(
        "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's1', ?, 25, 20)", (last + 120,)
    )
    now = now_people(conn, last + 150, minutes=1)
    assert now is not None and now["presence"] == 20 and now["as_of"] == last + 120
    assert now["people_low"] < now["people"] < now["people_high"] and abs(now["people"] - 8.0) < 0.5


def test_no_figure_without_history_or_a_fresh_count(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / "hub.db")
    fill(conn, int(SETTLED_S // 60) + MIN_MINUTES - 10)  # too few settled minutes
    last = T0 + 60 * (int(SETTLED_S // 60) + MIN_MINUTES - 11)
    assert fit_ratio(conn, last + 60) is None
    conn2 = store.connect(tmp_path / "hub2.db")
    fill(conn2, 600)
    # The latest report is 10 minutes old: not "now".
    assert now_people(conn2, T0 + 60 * 610, max_age_s=180) is None


def test_the_background_of_empty_minutes_is_taken_off(tmp_path: Path) -> None:
    """Closed hours: nobody inside, the fixed devices and staff still counted (3 MACs)."""
    conn = store.connect(tmp_path / "hub.db")
    for i in range(900):
        m = T0 + 60 * i
        open_ = i % 300 < 200
        count = 3 + (5 + i % 7 if open_ else 0)
        people = 0.4 * (count - 3) if open_ else 0.0
        conn.execute("INSERT INTO occupancy (minute, people) VALUES (?, ?)", (m, people))
        conn.execute(
            "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's1', ?, ?, ?)",
            (m + 10, count, count),
        )
    conn.commit()
    last = T0 + 60 * 899
    fit = fit_ratio(conn, last + 60, minutes=1)
    assert fit is not None and fit["background"] == 3 and abs(fit["ratio"] - 0.4) < 0.01
    # A closed shop with only the background heard reads nobody.
    conn.execute(
        "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's1', ?, 3, 3)", (last + 120,)
    )
    assert now_people(conn, last + 150, minutes=1)["people"] == 0.0


def test_a_few_minutes_of_counts_are_steadier_than_one(tmp_path: Path) -> None:
    """Ten people inside all along; a phone scans every two minutes, so each minute's count hears
    a different half of them (MACs: 2 per phone heard). The mean of the last minutes is the
    steadier reading, at fitting and at use alike."""
    import random

    rng = random.Random(7)
    conn = store.connect(tmp_path / "hub.db")
    for i in range(600):
        m = T0 + 60 * i
        heard = sum(rng.random() < 0.5 for _ in range(10))
        conn.execute("INSERT INTO occupancy (minute, people) VALUES (?, 10.0)", (m,))
        conn.execute(
            "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's1', ?, ?, ?)",
            (m + 10, 2 * heard, 2 * heard),
        )
    conn.commit()
    last = T0 + 60 * 599
    errors: dict[int, list[float]] = {1: [], 5: [], SMOOTH_MINUTES: []}
    for k in range(60):  # the next hour, ten people still inside
        m = last + 60 * (k + 1)
        heard = sum(rng.random() < 0.5 for _ in range(10))
        conn.execute(
            "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's1', ?, ?, ?)",
            (m + 10, 2 * heard, 2 * heard),
        )
        for minutes in errors:
            errors[minutes].append(abs(now_people(conn, m + 30, minutes=minutes)["people"] - 10.0))
    mae = {n: sum(e) / len(e) for n, e in errors.items()}
    assert mae[5] < 0.6 * mae[1]
    assert mae[SMOOTH_MINUTES] < 0.8 * mae[5]
    # The dashboard's default is the quarter hour's mean.
    assert now_people(conn, last + 3630) == now_people(conn, last + 3630, minutes=SMOOTH_MINUTES)
    # Everybody leaves: the mean follows within its window, half of them gone half-way.
    gone = last + 3600
    for k in range(SMOOTH_MINUTES):
        m = gone + 60 * (k + 1)
        conn.execute(
            "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's1', ?, 0, 0)", (m + 10,)
        )
        if k + 1 == (SMOOTH_MINUTES + 1) // 2:
            # 8 of the 15 minutes empty: about 7/15 of the ten people are still counted.
            assert 3.0 < now_people(conn, m + 30)["people"] < 7.0
    assert now_people(conn, gone + 60 * SMOOTH_MINUTES + 30)["people"] == 0.0


def test_the_minute_in_progress_does_not_dip_when_a_sensor_has_not_reported_yet(tmp_path: Path) -> None:
    """Two sensors, the shop's big zone (s1, 25 MACs) reports at :50, the small one (s2, 5) at
    :10: between the two reports the minute so far holds only the small count, and "now" must
    not read it as the shop's."""
    conn = store.connect(tmp_path / "hub.db")
    for i in range(600):
        m = T0 + 60 * i
        conn.execute("INSERT INTO occupancy (minute, people) VALUES (?, 10.0)", (m,))
        for sensor, inside, at in (("s1", 25, 50), ("s2", 5, 10)):
            conn.execute(
                "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', ?, ?, ?, ?)",
                (sensor, m + at, inside, inside),
            )
    conn.commit()
    last = T0 + 60 * 599
    nxt = last + 60
    conn.execute("INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's2', ?, 5, 5)", (nxt + 10,))
    early = now_people(conn, nxt + 20)
    conn.execute(
        "INSERT INTO presence (site, sensor, ts, devices, inside) VALUES ('demo', 's1', ?, 25, 25)", (nxt + 50,)
    )
    late = now_people(conn, nxt + 55)
    assert early is not None and late is not None
    assert abs(early["people"] - 10.0) < 0.5 and abs(late["people"] - 10.0) < 0.5


def test_the_page_says_how_long_the_count_is_averaged() -> None:
    from footfall.hub.figures import EXPLAIN

    assert f"last {SMOOTH_MINUTES} minutes" in EXPLAIN["now"]
