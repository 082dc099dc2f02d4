"""People present, minute by minute: the library on agent visits, the hub's CLI and API, and
live figures that are not revised when the link job runs again."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from footfall.hub import link, store
from footfall.hub.analysis import day_bounds
from footfall.hub.occupancy import people_per_window, per_minute, windows
from footfall.tools.evaluate_live import evaluate_live
from footfall.tools.evaluate_occupancy import occupancy_errors, truth_occupancy
from footfall.tools.evaluate_pipeline import Scenario, hub_config, ingest, simulate


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory):
    work = Path(tmp_path_factory.mktemp("occupancy"))
    return simulate(Scenario(seed=21, scale=0.5, randomized_share=0.8, sensors=2), work), work


def test_a_visit_occupies_its_minutes_times_the_occupancy_factor() -> None:
    """A fixed-address visitor heard inside every minute for ten minutes is ~1 person (over the
    probing share) in each of those minutes, times the factor fitted on the tuning days
    (``Defaults.occupancy_factor``, ``tools/fit_occupancy.py``); with one sensor its own."""
    from footfall.hub import inside
    from footfall.hub.estimate import DEFAULTS, ScanRecord, Session, SiteModel
    from footfall.hub.occupancy import per_minute, present_weight

    shop, street = {"s1": -55.0, "s2": -50.0}, {"s1": -60.0, "s2": -88.0}
    trained = inside.fit([shop] * 40, [street] * 40)
    t0 = 1_800_000_000.0
    for model, factor in (
        (
            SiteModel(inside=trained, scan_rate=1 / 60, front_sensor="s1", visit_dwell_s=600.0),
            DEFAULTS.occupancy_factor,
        ),
        (SiteModel(inside=inside.InsideModel(sensors=("s1",)), scan_rate=1 / 60), DEFAULTS.occupancy_factor_weak),
    ):
        visit = Session("aa:bb", [ScanRecord(t0 + 60 * i, shop) for i in range(11)], identified=True)
        minutes = per_minute([visit], model, t0 - 120, t0 + 900)
        person = present_weight(visit, model)
        assert person > 0.9
        assert minutes[int(t0) + 300] == pytest.approx(person * factor)
        assert sum(minutes.values()) == pytest.approx(person * factor * 11, rel=1e-6)
    assert DEFAULTS.occupancy_factor > 1 and DEFAULTS.occupancy_factor_weak > 1


def test_a_randomizing_track_as_long_as_staff_occupies_the_shop_where_its_scans_were() -> None:
    """Phones of one model inside at once are told apart by their signal only, so the tracker
    strings visitors' scans into one track that lasts for hours. Staff are known by a fixed
    address (and equipment by a random one kept for hours): such a track is not one person all
    day, nor nobody. Each inside scan is one person for the time a phone inside takes to make a
    scan; a fixed-address phone as long stays out, and so do the chain's scans from the street."""
    from footfall.hub import inside
    from footfall.hub.estimate import DEFAULTS, LONG_STAY_S, ScanRecord, Session, SiteModel, classify
    from footfall.hub.occupancy import chained

    shop, street = {"s1": -55.0, "s2": -50.0}, {"s1": -60.0, "s2": -88.0}
    model = SiteModel(
        inside=inside.fit([shop] * 40, [street] * 40), scan_rate=1 / 60, front_sensor="s1", visit_dwell_s=600.0
    )
    t0 = 1_800_000_000.0
    hours = LONG_STAY_S + 3600.0
    # Scans twice as dense in the first hour (every 30 s) as after (every 60 s): twice the
    # people; from the third hour on they read as the street's.
    times = [t0 + 30.0 * i for i in range(120)] + [t0 + 3600.0 + 60.0 * i for i in range(1, int((hours - 3600) / 60))]
    scans = [ScanRecord(t, street if t >= t0 + 3 * 3600 else shop) for t in times]
    chain = Session("rand", scans)
    staff = Session("aa:bb", [ScanRecord(t, shop) for t in times], identified=True)
    equipment = Session("rand2", list(scans), long_presence=True)
    classify([chain, staff, equipment], model)
    assert chained(chain) and not chained(staff) and not chained(equipment)
    minutes = per_minute([chain, staff, equipment], model, t0, t0 + hours)
    each = DEFAULTS.occupancy_factor / DEFAULTS.probing_share / model.heard_share / DEFAULTS.inside_scans_per_min
    # Per minute: inside scans in it (spread over one scan's time) over the scans one phone makes.
    assert minutes[int(t0) + 1800] == pytest.approx(2.0 * each, rel=0.02)
    assert minutes[int(t0) + 7200] == pytest.approx(1.0 * each, rel=0.02)
    assert minutes[int(t0) + 4 * 3600] == 0.0
    inside_scans = sum(1 for t in times if t < t0 + 3 * 3600)
    assert sum(minutes.values()) == pytest.approx(inside_scans * each, rel=0.02)


def test_windows_average_minutes_and_refuse_odd_lengths() -> None:
    minutes = {0: 1.0, 60: 3.0, 600: 2.0}
    assert windows(minutes, 600) == {0: 0.4, 600: 0.2}
    with pytest.raises(ValueError, match="multiple of 60"):
        windows(minutes, 90)


def test_people_per_window_on_agent_visits_beats_counting_macs(small_store) -> None:
    """The library function on the agents' visit payloads, no database, against the truth."""
    run, _ = small_store
    day = run.truth["days"][0]
    presence = [{"ts": day["capture"][1]}]
    est = people_per_window(run.visits, presence, 600, is_open=lambda t: day["open"] <= t <= day["close"])
    truth = truth_occupancy(run.truth, 0)
    keys = sorted(truth)
    scores = occupancy_errors(keys, truth, est)
    macs: dict[int, set[str]] = {k: set() for k in keys}
    for v in run.visits:
        w = int(v["first_seen"] // 600 * 600)
        while w <= v["last_seen"]:
            if w in macs:
                macs[w].add(v["device"])
            w += 600
    naive = occupancy_errors(keys, truth, {k: float(len(x)) for k, x in macs.items()})
    print("hub", scores, "distinct MACs", naive)
    assert scores["mae_occupied"] < naive["mae_occupied"] / 5
    assert scores["pearson"] > 0.8 > naive["pearson"] - 0.1
    # Inferred opening hours give the same order of accuracy.
    inferred = occupancy_errors(keys, truth, people_per_window(run.visits, (), 600))
    assert inferred["mae_occupied"] < naive["mae_occupied"] / 3


def test_hub_occupancy_cli_and_api(small_store, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from footfall.hub import auth
    from footfall.hub.api import WebSettings, create_app

    run, _ = small_store
    db = tmp_path / "hub.db"
    writer, _ = ingest(run, db)
    link.relink(writer.conn, writer.config, since=0)
    date = run.truth["days"][0]["date"]
    clock = time.time()
    an = link.relink_day(writer.conn, writer.config, date, until=clock, now=clock).analysis
    # The link job stores per_minute as it is (the occupancy factor once), and the day's
    # person-minutes come near the visitors' true time inside (held-out store; tuning days -10 %
    # without the factor).
    start, stop = day_bounds(date, writer.config.tz)
    stored = writer.conn.execute(
        "SELECT sum(people) FROM occupancy WHERE minute >= ? AND minute < ?", (start, stop)
    ).fetchone()[0]
    assert stored == pytest.approx(sum(per_minute(an.sessions, an.model, start, stop).values()), rel=1e-3)
    visitors = [p for p in run.truth["people"] if p["kind"] == "visitor" and p["day"] == 0 and p["inside"]]
    inside_min = sum((p["inside"][1] - p["inside"][0]) / 60 for p in visitors)
    print("person-minutes", stored, "truth", inside_min)
    assert 0.85 < stored / inside_min < 1.2
    writer.conn.close()
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'site = "demo"\ndb = "{db}"\nhours = "10-21"\n')
    cmd = [sys.executable, "-m", "footfall", "hub", "occupancy", "--config", str(cfg), "--start", date]
    proc = subprocess.run([*cmd, "--window", "900"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 96 and list(rows[0]) == ["start_local", "start_unix", "people"]
    busy = [float(r["people"]) for r in rows if r["people"] and "12:00" <= r["start_local"][-5:] <= "19:00"]
    assert busy and max(busy) > 1
    bad = subprocess.run([*cmd, "--window", "90"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "multiple of 60" in bad.stderr

    conn = store.connect(db)
    key = auth.create_api_key(conn, "test")
    conn.close()
    clock = datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp() + 15 * 3600
    client = TestClient(create_app(db, WebSettings(clock=lambda: clock, refresh_interval_s=0)))
    client.headers["X-API-Key"] = key
    r = client.get("/api/occupancy", params={"start": date, "window": 600})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["window_s"] == 600 and len(body["series"]) == 144 and body["explain"]
    assert client.get("/api/occupancy", params={"start": date, "window": 90}).status_code in (400, 422)
    now = client.get("/api/now").json()
    # At 15:00 the link job (run with the real clock) has estimated every minute, and the hours
    # before are settled: the live presence count scaled to people by the site's ratio (hub/now.py).
    assert now["source"] == "presence_calibrated", now
    assert now["now_in_store_low"] <= now["now_in_store"] <= now["now_in_store_high"]
    assert clock - 180 <= now["as_of_estimate"] <= clock + 60
    csv_text = client.get("/api/occupancy/csv", params={"start": date}).text
    assert csv_text.splitlines()[0].startswith("start,")


def test_live_figures_are_not_revised_by_the_next_link_run(tmp_path: Path) -> None:
    """A store with history, its day replayed as it happens, the link job every 15 minutes:
    what a run has counted, the next run may not move by more than 5 % (passers-by) or
    2 points (capture rate); today's totals go down at most once (staff recognised late, a
    burst of visits ending whose walks to the door the passers-by count had already counted, or
    the scans' count re-reading a scan: docs/metrics.md, "Live figures"; on this day by 0.4 % at
    19:15), and each time it is recorded as a revision the dashboard shows."""
    r = evaluate_live(Scenario(seed=23, scale=0.5, randomized_share=0.8, sensors=2, days=2), tmp_path)
    print(r.max_passersby_revision, r.max_visitors_revision, r.max_capture_revision_pts, r.backward)
    assert r.steps > 40
    assert r.max_passersby_revision <= 0.05
    assert r.max_capture_revision_pts <= 2.0
    assert r.max_visitors_revision <= 0.05
    assert r.backward_moves <= 1
    # Each time a total the dashboard shows went down, it says so (tests/test_revisions.py).
    assert len(r.revisions) == r.backward_shown


def test_hub_config_for_evaluation_names_opening_hours(small_store, tmp_path: Path) -> None:
    run, _ = small_store
    assert hub_config(run, tmp_path / "x.db").opening_hours == (10.0, 21.0)


def test_fit_occupancy_reports_the_factor_and_refuses_held_out_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    from footfall.tools import fit_occupancy

    days = [
        fit_occupancy.Day(1, "d1", False, person_minutes=900.0, visitors_x_dwell=1000.0, truth=1000.0),
        fit_occupancy.Day(2, "d2", False, person_minutes=800.0, visitors_x_dwell=900.0, truth=880.0),
        fit_occupancy.Day(3, "d3", True, person_minutes=400.0, visitors_x_dwell=500.0, truth=500.0),
    ]
    text = "\n".join(fit_occupancy.report(days))
    assert "fitted occupancy_factor 1.106" in text  # exp(mean(log(1000/900), log(880/800)))
    assert "fitted occupancy_factor_weak 1.250" in text
    with pytest.raises(SystemExit) as exc:
        fit_occupancy.main(["--seeds", "11"])
    assert exc.value.code == 2 and "held-out" in capsys.readouterr().err
