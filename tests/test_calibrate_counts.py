"""footfall calibrate counts: a door count against the hub's stored estimates.

A real hub database (``store.connect``) with ``estimates`` rows written directly, CSV files as
counters export them, and one end-to-end run on a simulated three-day store.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from footfall import cli
from footfall.hub import calibrate, calibrate_fit, figures, store
from footfall.hub.calibrate import CountsError, clear_calibrations, fit_counts, read_counts, store_calibration

DAY0 = date(2026, 11, 2)


# ----------------------------------------------------------------------------- helpers
def fig(visitors: float, passersby: float) -> dict:
    """Stored figures as the link job writes them (uncalibrated), heard counts beside."""
    cap = visitors / (visitors + passersby) if visitors + passersby else None
    return {
        "visitors": visitors,
        "visitors_low": visitors * 0.8,
        "visitors_high": visitors * 1.2,
        "visitors_heard": round(visitors * 0.6, 1),
        "passersby": passersby,
        "passersby_low": passersby * 0.7,
        "passersby_high": passersby * 1.3,
        "passersby_heard": round(passersby * 0.2, 1),
        "capture_rate": cap,
        "capture_rate_low": None if cap is None else cap * 0.8,
        "capture_rate_high": None if cap is None else cap * 1.2,
        "capture_rate_heard": cap,
        "median_dwell_s": 600.0,
        "median_dwell_s_low": 500.0,
        "median_dwell_s_high": 700.0,
        "median_dwell_s_heard": 580.0,
        "mean_dwell_s": 800.0,
        "mean_dwell_s_low": 700.0,
        "mean_dwell_s_high": 900.0,
        "mean_dwell_s_heard": 780.0,
        "sessions": 10,
    }


def add_day(conn, day: date, hourly: dict[int, tuple[float, float]], tz=UTC, watermark: float | None = None) -> None:
    """A day's estimate rows: ``hourly`` {hour: (visitors, passersby)}, hours 0-23 present
    (zero where not given) up to the watermark (default: the end of the day)."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).timestamp()
    wm = end if watermark is None else watermark
    rows = []
    tv = tp = 0.0
    for h in range(24):
        if datetime(day.year, day.month, day.day, h, tzinfo=tz).timestamp() >= wm:
            break
        v, p = hourly.get(h, (0.0, 0.0))
        tv, tp = tv + v, tp + p
        rows.append((day.isoformat(), h, json.dumps(fig(v, p)), wm, wm))
    rows.append((day.isoformat(), -1, json.dumps(fig(tv, tp)), wm, wm))
    assert start < end
    with conn:
        conn.executemany("INSERT INTO estimates (day, hour, figures, watermark, computed) VALUES (?, ?, ?, ?, ?)", rows)


def open_hours(v: float, p: float, hours=range(10, 18)) -> dict[int, tuple[float, float]]:
    return {h: (v, p) for h in hours}


@pytest.fixture
def conn(tmp_path):
    c = store.connect(tmp_path / "hub.db")
    yield c
    c.close()


def write(tmp_path: Path, text: str, name: str = "counts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def hourly_csv(days: list[date], per_day: dict[date, float], hours=range(10, 18), passersby=None) -> str:
    head = "start,visitors" + (",passersby" if passersby else "")
    lines = [head]
    for d in days:
        for h in hours:
            row = f"{d.isoformat()}T{h:02d}:00:00,{per_day[d] / len(hours):g}"
            if passersby:
                row += f",{passersby[d] / len(hours):g}"
            lines.append(row)
    return "\n".join(lines) + "\n"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["calibrate", "counts", *args])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- the fit
def test_factor_is_the_ratio_estimator_with_a_bootstrap_interval(conn, tmp_path):
    days = [DAY0 + timedelta(days=i) for i in range(5)]
    truth_v = dict(zip(days, (96.0, 104.0, 92.0, 110.0, 98.0), strict=True))
    truth_p = dict(zip(days, (400.0, 380.0, 420.0, 410.0, 390.0), strict=True))
    for d in days:
        add_day(conn, d, open_hours(10.0, 50.0))  # 80 visitors, 400 passers-by a day
    counts = read_counts(write(tmp_path, hourly_csv(days, truth_v, passersby=truth_p)), "UTC")
    assert counts.figures == ("visitors", "passersby") and len(counts.rows) == 40
    report = fit_counts(conn, counts, "UTC")

    v = report["figures"]["visitors"]
    assert v["fitted"] == pytest.approx(sum(truth_v.values()) / (5 * 80), abs=1e-4)
    # Applied: the fitted factor shrunk toward 1 by its credibility (five days: nearly all of it).
    assert v["weight"] == pytest.approx(calibrate_fit.credibility("visitors", 5, False), abs=1e-3)
    assert v["factor"] == pytest.approx(v["fitted"] ** v["weight"], abs=1e-3)
    assert v["intervals"] == 40 and v["days"] == 5 and v["bootstrap_over"] == "days"
    assert v["low"] < v["factor"] < v["high"]
    # The day ratios are 1.15-1.375: the interval lies inside their range.
    assert v["low"] >= 1.15 ** v["weight"] and v["high"] <= 1.375 ** v["weight"]
    assert [d["day"] for d in v["per_day"]] == [d.isoformat() for d in days]
    first = v["per_day"][0]
    assert first["truth"] == 96.0 and first["estimate"] == 80.0
    assert first["calibrated"] == pytest.approx(80 * v["factor"], abs=0.1)
    assert v["mape_before"] == pytest.approx(statistics.fmean(abs(80 - t) / t for t in truth_v.values()), abs=1e-3)
    assert v["mape_after"] < v["mape_before"]

    p = report["figures"]["passersby"]
    assert p["factor"] == pytest.approx(2000 / 2000, abs=1e-4)
    assert report["factors"] == {"visitors": v["factor"], "passersby": p["factor"]}
    assert report["intervals_used"] == 40 and report["days"] == [d.isoformat() for d in days]
    assert report["source"] == "door count counts.csv, 2026-11-02..2026-11-06, 40 hours"
    assert not report["warnings"], report["warnings"]
    assert "90 % interval" in calibrate.format_report(report)
    json.dumps(report)  # stored as the fit JSON


def test_partial_hours_are_prorated(conn, tmp_path):
    add_day(conn, DAY0, {10: (10.0, 40.0), 11: (20.0, 80.0), 12: (30.0, 0.0)})
    # 10:30-11:30 covers half of hour 10 and half of 11: 5 + 10 estimated visitors.
    path = write(tmp_path, "start,end,visitors\n2026-11-02T10:30,2026-11-02T11:30,30\n")
    v = fit_counts(conn, read_counts(path, "UTC"), "UTC")["figures"]["visitors"]
    assert v["estimate"] == 15.0 and v["fitted"] == 2.0
    # Quarter hours without an end: each runs to the next start; the last one a quarter too.
    text = "time,visitors\n" + "".join(f"2026-11-02 12:{m:02d},3\n" for m in (0, 15, 30, 45))
    counts = read_counts(write(tmp_path, text, "q.csv"), "UTC")
    assert counts.step_s == 900 and [r.end - r.start for r in counts.rows] == [900] * 4
    v = fit_counts(conn, counts, "UTC")["figures"]["visitors"]
    assert v["estimate"] == 30.0 and v["fitted"] == pytest.approx(12 / 30)
    assert v["bootstrap_over"] == "intervals" and v["low"] is not None


def test_skips_intervals_without_estimate_and_the_provisional_period(conn, tmp_path):
    d1 = DAY0 + timedelta(days=1)
    add_day(conn, DAY0, open_hours(10.0, 50.0))
    wm = datetime(2026, 11, 3, 14, 30, tzinfo=UTC).timestamp()  # the job ran at 14:45 (settle 15 min)
    add_day(conn, d1, open_hours(10.0, 50.0), watermark=wm)
    text = (
        "start,end,visitors\n"
        "2026-11-01T10:00,2026-11-01T11:00,7\n"  # before the hub had estimates
        "2026-11-02T10:00,2026-11-02T11:00,12\n"
        "2026-11-03T13:00,2026-11-03T14:00,12\n"
        "2026-11-03T14:00,2026-11-03T14:30,6\n"  # the partial hour up to the watermark: half of hour 14
        "2026-11-03T14:30,2026-11-03T15:00,6\n"  # provisional
        "2026-11-03T15:00,2026-11-03T16:00,12\n"  # provisional
    )
    report = fit_counts(conn, read_counts(write(tmp_path, text), "UTC"), "UTC")
    assert report["skipped"]["no_estimate"] == 1
    assert report["skipped"]["provisional"] == 2
    assert report["skipped"]["lines"] == [2, 6, 7]
    assert report["intervals_used"] == 3
    v = report["figures"]["visitors"]
    # Hour 14 of the second day is estimated up to 14:30: its 10 visitors are that half hour's.
    assert v["estimate"] == 30.0 and v["truth"] == 30.0 and v["factor"] == 1.0
    text = calibrate.format_report(report)
    assert "1 with no estimate" in text and "2 in the hub's provisional period" in text


def test_nothing_to_match_is_a_clear_error(conn, tmp_path):
    path = write(tmp_path, "start,visitors\n2026-11-02T10:00,5\n")
    with pytest.raises(CountsError, match="the hub has no estimates yet"):
        fit_counts(conn, read_counts(path, "UTC"), "UTC")
    add_day(conn, DAY0 + timedelta(days=5), open_hours(10.0, 50.0))
    with pytest.raises(CountsError, match=r"none of the 1 counted intervals .* estimates for 2026-11-07\.\.2026-11-07"):
        fit_counts(conn, read_counts(path, "UTC"), "UTC")


def test_warnings_few_days_and_wide_interval(conn, tmp_path):
    days = [DAY0, DAY0 + timedelta(days=1)]
    for d in days:
        add_day(conn, d, open_hours(10.0, 50.0))
    truth = {days[0]: 50.0, days[1]: 130.0}  # the two days disagree wildly
    report = fit_counts(conn, read_counts(write(tmp_path, hourly_csv(days, truth)), "UTC"), "UTC")
    w = " | ".join(report["warnings"])
    assert "only 2 days counted" in w
    assert "wider than +-15%" in w
    assert report["factors"]["passersby"] == 1.0 and list(report["figures"]) == ["visitors"]


def test_zero_estimate_or_zero_count_is_not_fitted(conn, tmp_path):
    add_day(conn, DAY0, open_hours(0.0, 50.0))
    path = write(tmp_path, "start,visitors,passersby\n2026-11-02T10:00,5,0\n2026-11-02T11:00,5,0\n")
    with pytest.raises(CountsError, match="nothing to calibrate") as exc:
        fit_counts(conn, read_counts(path, "UTC"), "UTC")
    assert any("estimated none" in e for e in exc.value.errors)
    assert any("count is zero" in e for e in exc.value.errors)


def test_local_times_and_offsets_match_the_hubs_local_hours(conn, tmp_path):
    paris = ZoneInfo("Europe/Paris")
    add_day(conn, DAY0, {9: (100.0, 0.0), 10: (10.0, 0.0), 11: (10.0, 0.0)}, tz=paris)
    local = write(tmp_path, "start,visitors\n2026-11-02 10:00,20\n2026-11-02 11:00,20\n", "local.csv")
    offset = write(tmp_path, "timestamp,visitors\n2026-11-02T09:00Z,20\n2026-11-02T10:00:00+00:00,20\n", "utc.csv")
    t0 = datetime(2026, 11, 2, 10, tzinfo=paris).timestamp()
    unix = write(tmp_path, f"time,visitors\n{t0:.0f},20\n{t0 + 3600:.0f},20\n", "unix.csv")
    for path in (local, offset, unix):
        v = fit_counts(conn, read_counts(path, "Europe/Paris"), "Europe/Paris")["figures"]["visitors"]
        assert v["estimate"] == 20.0 and v["fitted"] == 2.0, path.name


def test_the_hour_the_clocks_go_back_covers_two_hours(conn, tmp_path):
    paris = ZoneInfo("Europe/Paris")
    fall_back = date(2026, 10, 25)  # 03:00 CEST -> 02:00 CET: the link job's hour 2 runs two hours
    add_day(conn, fall_back, {2: (20.0, 0.0)}, tz=paris)
    path = write(tmp_path, "start,end,visitors\n2026-10-25T01:00Z,2026-10-25T02:00Z,15\n")  # the second 02:00
    v = fit_counts(conn, read_counts(path, paris), paris)["figures"]["visitors"]
    assert v["estimate"] == 10.0 and v["fitted"] == 1.5


def test_rows_without_a_count_take_no_part(conn, tmp_path):
    add_day(conn, DAY0, open_hours(10.0, 50.0))
    text = "start,visitors,passersby\n2026-11-02T10:00,12,\n2026-11-02T11:00,,\n2026-11-02T12:00,8,45\n"
    counts = read_counts(write(tmp_path, text), "UTC")
    assert counts.empty_rows == 1
    report = fit_counts(conn, counts, "UTC")
    assert report["intervals_used"] == 2 and report["rows_without_count"] == 1
    assert report["figures"]["visitors"]["fitted"] == 1.0 and report["figures"]["visitors"]["intervals"] == 2
    assert report["figures"]["passersby"]["fitted"] == 0.9 and report["figures"]["passersby"]["intervals"] == 1
    assert "1 row has no count and was left out" in calibrate.format_report(report)


# ----------------------------------------------------------------------------- the CSV
def test_formats_counters_export(tmp_path):
    # Semicolons, a BOM, 'entries', an ignored 'out' column, a comment and a blank line.
    text = "\ufeffStart;End;Entries;Out;Passers-by\n# door 1\n2026-11-02 10:00;2026-11-02 10:30;4;3;20\n\n"
    text += "2026-11-02 10:30;2026-11-02 11:00;6;5;\n"
    c = read_counts(write(tmp_path, text), "UTC")
    assert c.figures == ("visitors", "passersby") and c.ignored_columns == ("Out",)
    assert [(r.line, r.visitors, r.passersby) for r in c.rows] == [(3, 4.0, 20.0), (5, 6.0, None)]
    # Date and time in two columns ('in'); daily counts by date alone are whole days.
    c = read_counts(write(tmp_path, "date,time,in\n2026-11-02,10:00,4\n2026-11-02,11:00,5\n"), "UTC")
    assert [r.start for r in c.rows] == [datetime(2026, 11, 2, h, tzinfo=UTC).timestamp() for h in (10, 11)]
    c = read_counts(write(tmp_path, "date,visitors\n2026-11-03,150\n2026-11-02,140\n"), "Europe/Paris")
    paris = ZoneInfo("Europe/Paris")
    assert [r.line for r in c.rows] == [3, 2]  # sorted by time, lines kept
    assert c.rows[0].start == datetime(2026, 11, 2, tzinfo=paris).timestamp()
    assert c.rows[0].end == datetime(2026, 11, 3, tzinfo=paris).timestamp()
    assert c.step_s is None
    # The last row of an hourly day does not stretch over the night to the next morning.
    c = read_counts(write(tmp_path, "start,visitors\n2026-11-02T19:00,4\n2026-11-02T20:00,2\n2026-11-03T10:00,3\n"))
    assert [r.end - r.start for r in c.rows] == [3600, 3600, 3600]


BAD = [
    ("", "is empty"),
    ("\n\n# nothing\n", "is empty"),
    (",,\n", "is empty"),
    ("start,visitors\n", "no counts after the header (line 1)"),
    ("start,visitors,weather\n2026-11-02T10:00,3,sunny\n", "line 1: unknown column 'weather'"),
    ("visitors,passersby\n3,4\n", "line 1: no time column"),
    ("start,time,visitors\n", "line 1: several time columns (start, time)"),
    ("start,out\n2026-11-02T10:00,3\n", "line 1: no count column"),
    ("start,visitors,entries\n", "line 1: columns visitors and entries both give the visitors count"),
    ("start,Visitors,visitors\n", "line 1: column 'visitors' appears twice"),
    ("start,visitors\n2026-11-02T10:00,3\nyesterday,4\n", "line 3: time 'yesterday' is not a time"),
    ("start,visitors\n2026-11-02T25:00,3\n", "line 2: time '2026-11-02T25:00' is not a time"),
    ("start,visitors\n1793613600000,3\n", "line 2: time '1793613600000' looks like milliseconds"),
    ("start,visitors\n9999-12-31,3\n", "line 2: time '9999-12-31' is not between 2000 and 2100"),
    ("start,visitors\n1026-11-02T10:00,3\n", "line 2: time '1026-11-02T10:00' is not between 2000 and 2100"),
    ("start,visitors\n2026-11-02T10:00,-3\n", "line 2: visitors -3 is negative"),
    ("start,visitors\n2026-11-02T10:00,many\n", "line 2: visitors 'many' is not a number"),
    ("start,visitors\n2026-11-02T10:00,nan\n", "line 2: visitors 'nan' is not a number"),
    ("start,visitors\n2026-11-02T10:00,3,4\n", "line 2: 3 fields, the header has 2"),
    ("start,end,visitors\n2026-11-02T10:00,2026-11-02T09:00,3\n", "line 2: end '2026-11-02T09:00' is not after"),
    (
        "start,end,visitors\n2026-11-02T10:00,2026-11-02T11:00,3\n2026-11-02T10:30,2026-11-02T11:30,3\n",
        "line 3: interval 2026-11-02 10:30-2026-11-02 11:30 overlaps line 2 (2026-11-02 10:00-2026-11-02 11:00)",
    ),
    ("start,visitors\n2026-11-02T10:00,3\n2026-11-02T10:00,4\n", "line 3: same start (2026-11-02 10:00) as line 2"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[-1].strip()[:30] for _, m in BAD])
def test_validation_errors_name_the_line(tmp_path, text, message):
    with pytest.raises(CountsError) as exc:
        read_counts(write(tmp_path, text), "UTC")
    assert message in str(exc.value)


def test_every_bad_row_is_reported_at_once(tmp_path):
    text = "start,visitors\n2026-11-02T10:00,3\nsoon,4\n2026-11-02T12:00,-1\n2026-11-02T13:00,x\n"
    with pytest.raises(CountsError) as exc:
        read_counts(write(tmp_path, text), "UTC")
    assert [e.split(":")[0] for e in exc.value.errors] == ["line 3", "line 4", "line 5"]


def test_unreadable_file_and_unknown_time_zone(tmp_path):
    with pytest.raises(CountsError, match="cannot read"):
        read_counts(tmp_path / "missing.csv", "UTC")
    with pytest.raises(CountsError, match="unknown time zone 'Mars/Olympus'"):
        read_counts(write(tmp_path, "start,visitors\n2026-11-02T10:00,3\n"), "Mars/Olympus")
    # Bytes that are not UTF-8 (a Windows export) still read: the header is ASCII.
    (tmp_path / "latin.csv").write_bytes(b"start,visitors,note\n2026-11-02T10:00,3,caf\xe9\n")
    assert read_counts(tmp_path / "latin.csv", "UTC").rows[0].visitors == 3.0


# ----------------------------------------------------------------------------- storing, the dashboard
def test_calibration_scales_the_dashboard_figures_but_not_the_heard_counts(conn, tmp_path):
    days = [DAY0 + timedelta(days=i) for i in range(3)]
    for d in days:
        add_day(conn, d, open_hours(10.0, 50.0))
    before = figures.period_totals(conn, days[0], days[-1])
    truth = {d: 120.0 for d in days}
    report = fit_counts(conn, read_counts(write(tmp_path, hourly_csv(days, truth)), "UTC"), "UTC")
    f = round(1.5 ** calibrate_fit.credibility("visitors", 3, False), 4)
    assert report["figures"]["visitors"]["fitted"] == 1.5 and 1.2 < f < 1.5
    assert report["factors"] == {"visitors": f, "passersby": 1.0}
    cal_id = store_calibration(conn, report)
    row = conn.execute("SELECT visitors, passersby, source, fit FROM calibrations WHERE id = ?", (cal_id,)).fetchone()
    assert tuple(row[:3]) == (f, 1.0, report["source"])
    assert json.loads(row[3])["figures"]["visitors"]["factor"] == f

    after = figures.period_totals(conn, days[0], days[-1])
    assert before["visitors"] == 240.0 and after["visitors"] == pytest.approx(240.0 * f, abs=0.2)
    assert after["visitors_low"] == pytest.approx(before["visitors_low"] * f, abs=0.2)
    assert after["visitors_high"] == pytest.approx(before["visitors_high"] * f, abs=0.2)
    assert after["visitors_heard"] == before["visitors_heard"]
    assert after["passersby"] == before["passersby"] and after["passersby_heard"] == before["passersby_heard"]
    assert after["capture_rate"] == pytest.approx(240 * f / (240 * f + 1200), abs=1e-3)

    # A new calibration is fitted on the stored (uncalibrated) estimates: it replaces, never compounds.
    report2 = fit_counts(conn, read_counts(write(tmp_path, hourly_csv(days, truth), "again.csv"), "UTC"), "UTC")
    assert report2["factors"]["visitors"] == f and report2["replaces"]["id"] == cal_id
    store_calibration(conn, report2)
    assert figures.period_totals(conn, days[0], days[-1])["visitors"] == pytest.approx(240.0 * f, abs=0.2)
    assert clear_calibrations(conn, latest_only=True) == 1
    assert figures.latest_calibration(conn).visitors == f
    assert clear_calibrations(conn) == 1
    assert figures.period_totals(conn, days[0], days[-1])["visitors"] == 240.0


def test_cli_dry_run_json_store_show_undo_clear(conn, tmp_path, capsys):
    days = [DAY0 + timedelta(days=i) for i in range(3)]
    for d in days:
        add_day(conn, d, open_hours(10.0, 50.0))
    db = str(tmp_path / "hub.db")
    path = write(tmp_path, hourly_csv(days, {d: 100.0 for d in days}, passersby={d: 360.0 for d in days}))

    rc, out, _ = run_cli(capsys, "--truth", str(path), "--db", db, "--tz", "UTC", "--dry-run")
    assert rc == 0 and "Dry run: nothing stored" in out and "says 1.250" in out and "says 0.900" in out
    assert conn.execute("SELECT count(*) FROM calibrations").fetchone()[0] == 0

    rc, out, _ = run_cli(capsys, "--truth", str(path), "--db", db, "--dry-run", "--json")
    report = json.loads(out)
    assert rc == 0 and report["stored"] is None
    assert {k: v["fitted"] for k, v in report["figures"].items()} == {"visitors": 1.25, "passersby": 0.9}
    assert conn.execute("SELECT count(*) FROM calibrations").fetchone()[0] == 0

    rc, out, _ = run_cli(capsys, "--truth", str(path), "--db", db)
    assert rc == 0 and "Stored as calibration 1" in out
    applied = figures.latest_calibration(conn).visitors
    assert applied == round(1.25 ** calibrate_fit.credibility("visitors", 3, False), 4)
    rc, out, _ = run_cli(capsys, "--show", "--db", db)
    assert rc == 0 and f"factor {applied:.3f}" in out

    # A config file gives the database and the time zone.
    toml = write(tmp_path, f'site = "demo"\ntimezone = "UTC"\ndb = "{db}"\n', "hub.toml")
    rc, out, _ = run_cli(capsys, "--truth", str(path), "--config", str(toml))
    assert rc == 0 and "Stored as calibration 2" in out and "In force until now" in out

    rc, out, _ = run_cli(capsys, "--undo", "--db", db)
    assert rc == 0 and "removed 1 calibration;" in out and f"in force now: visitors x{applied:.3f}" in out
    rc, out, _ = run_cli(capsys, "--clear", "--db", db)
    assert rc == 0 and "removed 1 calibration;" in out and "uncalibrated" in out
    assert conn.execute("SELECT count(*) FROM calibrations").fetchone()[0] == 0


def test_cli_errors_are_one_clear_message(conn, tmp_path, capsys):
    db = str(tmp_path / "hub.db")
    bad = write(tmp_path, "start,visitors\n2026-11-02T10:00,3\nlater,-2\n")
    rc, out, err = run_cli(capsys, "--truth", str(bad), "--db", db)
    assert rc == 1 and "line 3: time 'later' is not a time" in err and "line 3: visitors -2 is negative" in err
    assert "Traceback" not in err
    rc, out, _ = run_cli(capsys, "--truth", str(bad), "--db", db, "--json")
    assert rc == 1 and len(json.loads(out)["errors"]) == 2
    rc, _, err = run_cli(capsys, "--truth", str(bad), "--db", str(tmp_path / "nope.db"))
    assert rc == 1 and "no hub database at" in err and not (tmp_path / "nope.db").exists()
    rc, _, err = run_cli(capsys, "--db", db)
    assert rc == 1 and "give --truth" in err
    rc, _, err = run_cli(capsys, "--truth", str(bad), "--clear", "--db", db)
    assert rc == 1 and "give one of" in err
    rc, _, err = run_cli(capsys, "--truth", str(bad), "--db", db, "--tz", "Nowhere/Land")
    assert rc == 1 and "unknown time zone" in err


def test_existing_calibrate_invocations_still_parse_and_sensor_installs_get_one_line(monkeypatch, capsys):
    from footfall.edge_agent import cli as agent_cli

    parser = cli.build_parser()
    args = parser.parse_args(["calibrate", "--inside", "a.pcap", "--outside", "b.pcap"])
    assert args.func is agent_cli.cmd_calibrate and args.inside == "a.pcap"
    args = parser.parse_args(["calibrate", "--source", "iface:mon0", "--seconds", "30"])
    assert args.func is agent_cli.cmd_calibrate and args.seconds == 30.0
    args = parser.parse_args(["calibrate", "counts", "--truth", "c.csv", "--db", "hub.db", "--dry-run"])
    assert args.func is agent_cli.cmd_calibrate_counts and args.dry_run
    # Without the hub's code (a sensor): one line, no traceback.
    monkeypatch.setitem(sys.modules, "footfall.hub.calibrate", None)
    assert agent_cli.cmd_calibrate_counts(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the hub" in err


def test_time_zone_mismatch_is_warned(conn, tmp_path):
    add_day(conn, DAY0, open_hours(10.0, 50.0))
    t = datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp()
    with conn:
        conn.execute(
            "INSERT INTO visits (site, device, device_key, randomized, first_seen, last_seen, dwell_s, inside_s, class,"
            " long_stay, best_sensor, sensors, n_sensor_visits, day, hour)"
            " VALUES ('demo', 'd', 'd', 0, ?, ?, 60, 60, 'visitor', 0, 's1', '[]', 1, '2026-11-02', 12)",
            (t, t + 60),
        )
    path = write(tmp_path, "start,visitors\n2026-11-02T12:00,12\n")
    assert not any("time zone" in w for w in fit_counts(conn, read_counts(path, "UTC"), "UTC")["warnings"])
    report = fit_counts(conn, read_counts(path, "Asia/Tokyo"), "Asia/Tokyo")
    assert any("another time zone" in w for w in report["warnings"])


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_simulated_store_moves_toward_the_truth(tmp_path, capsys):
    """A simulated 3-day store through agents, ingest and the link job; day 1's true hourly
    counts calibrate; days 2 and 3 (not used in the fit) read through figures.period_totals."""
    from footfall.hub import link
    from footfall.tools.evaluate_pipeline import Scenario, ingest, simulate

    run = simulate(Scenario(seed=5, scale=0.5, days=3), tmp_path)
    db = tmp_path / "hub.db"
    writer, _ = ingest(run, db)
    conn, cfg = writer.conn, writer.config
    last = date.fromisoformat(run.truth["days"][-1]["date"])
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC).timestamp()
    link.relink(conn, cfg, since=0, now=end + cfg.settle_s)

    # Ground truth per local (UTC) hour: visitors by when they came in, passers-by by arrival.
    from footfall.tools.evaluate_calibration import door_count_csv, hourly_truth

    truth = hourly_truth(run.truth)
    text = door_count_csv(truth, [0])
    lines = text.strip().splitlines()
    path = write(tmp_path, text, "door.csv")

    report = fit_counts(conn, read_counts(path, cfg.tz), cfg.tz)
    assert report["intervals_used"] == len(lines) - 1 and report["days"] == [run.truth["days"][0]["date"]]
    assert any("only 1 day counted" in w for w in report["warnings"])

    held_out = [date.fromisoformat(d["date"]) for d in run.truth["days"][1:]]
    before = {d: figures.period_totals(conn, d, d) for d in held_out}
    store_calibration(conn, report)
    after = {d: figures.period_totals(conn, d, d) for d in held_out}

    errors: dict[str, list[float]] = {"before": [], "after": []}
    with capsys.disabled():
        print(f"\n{calibrate.format_report(report)}")
        print(f"{'day':10} {'figure':10} {'truth':>6} {'before':>8} {'error':>7} {'after':>8} {'error':>7}")
        for i, d in enumerate(held_out, start=1):
            for k, name in enumerate(("visitors", "passersby")):
                true = sum(c[k] for c in truth[i].values())
                b, a = before[d][name], after[d][name]
                eb, ea = (b - true) / true, (a - true) / true
                errors["before"].append(abs(eb))
                errors["after"].append(abs(ea))
                print(f"{d.isoformat():10} {name:10} {true:6d} {b:8.1f} {eb:+7.1%} {a:8.1f} {ea:+7.1%}")
                assert after[d][f"{name}_heard"] == before[d][f"{name}_heard"]
        mb, ma = statistics.fmean(errors["before"]), statistics.fmean(errors["after"])
        print(f"mean |error| on the held-out days: {mb:.1%} before, {ma:.1%} after calibration")
    assert all(math.isfinite(x) for x in errors["after"])
    assert ma <= mb
    conn.close()


def test_credibility_shrinks_noise_and_keeps_bias():
    """The applied share of a count's factor: smaller where more of a figure's error is
    day-to-day noise (2-3 sensors, one counted day: passers-by since their count takes the
    visitors' scans off, whose number wanders from day to day), nearly all where it is a store's
    bias (one sensor), growing with the days counted, and never above one."""
    w = calibrate_fit.credibility
    assert 0.5 < w("passersby", 1, False) < w("passersby", 3, False) < w("passersby", 30, False) < 1
    assert 0.4 < w("visitors", 1, False) < w("visitors", 3, False) < w("visitors", 30, False) < 1
    assert w("visitors", 1, True) > 0.8 and w("passersby", 1, True) > 0.8
    assert w("visitors", 1, False) < w("visitors", 1, True)
    assert w("passersby", 1, False) < w("passersby", 1, True)
    # A figure whose whole spread is no more than its day noise has no bias to take out.
    assert w("passersby", 3, False, calibrate_fit.DAY_NOISE[False]["passersby"]) == 0.0


def test_passersby_credibility_reads_the_figures_own_spread():
    """A count's factor for passers-by is weighed against the spread their range is built from at
    this kind of site (passby_stays.passersby_spread): the mean of two counts with two sensors or with
    three (a third sensor's figure wanders less from store to store, so more of a count's ratio is
    that day's noise), the scans' count alone with one sensor."""
    from footfall.hub import inside as inside_mod
    from footfall.hub import passby_scans
    from footfall.hub.estimate import DEFAULTS, SiteModel
    from footfall.hub.passby_stays import passersby_spread

    def site(sensors: int) -> SiteModel:
        names = [f"s{i}" for i in range(sensors)]
        inside = inside_mod.fit(
            [{n: -55.0 - 3 * i for i, n in enumerate(names)}] * 200,
            [{n: -82.0 - 3 * i for i, n in enumerate(names)}] * 200,
        )
        return SiteModel(inside=inside, front_sensor="s0")

    one, two, three = site(1), site(2), site(3)
    assert all(m.inside.trained for m in (one, two, three)) and one.weak and not two.weak
    assert passersby_spread(two) == DEFAULTS.passby_two_sensors.spread
    assert passersby_spread(three) == DEFAULTS.passby_more_sensors.spread
    assert passersby_spread(one) == passby_scans.default_model(one_sensor=True).spread
    for m in (one, two, three):
        assert calibrate_fit.figure_spread("passersby", m) == passersby_spread(m)
        assert calibrate_fit.figure_spread("visitors", m) is None
    w = calibrate_fit.credibility
    assert 0 < w("passersby", 3, False, passersby_spread(three)) < w("passersby", 3, False, passersby_spread(two)) < 1
    # One sensor: its figure's spread (the scans' count, 0.30) is no longer the stays' count's 0.48.
    assert w("passersby", 3, True, passersby_spread(one)) < w("passersby", 3, True)


def test_one_sensor_site_takes_more_of_the_factor(conn, tmp_path):
    """The site kind comes from the counted days' site models (SiteModel.weak)."""
    from footfall.hub.estimate import SiteModel
    from footfall.hub.inside import InsideModel

    days = [DAY0]
    add_day(conn, DAY0, open_hours(10.0, 50.0))
    path = write(tmp_path, hourly_csv(days, {DAY0: 120.0}, passersby={DAY0: 300.0}))
    strong = fit_counts(conn, read_counts(path, "UTC"), "UTC")["figures"]["visitors"]
    weak_model = SiteModel(inside=InsideModel(sensors=("s1",)))
    assert weak_model.weak
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO site_models (day, model, link_model, provisional, fitted) "
            "VALUES (?, ?, NULL, 0, 0)",
            (DAY0.isoformat(), json.dumps(weak_model.to_dict())),
        )
    weak = fit_counts(conn, read_counts(path, "UTC"), "UTC")["figures"]["visitors"]
    # Visitors: with 2-3 sensors more of their error is day-to-day noise than with one.
    assert strong["fitted"] == weak["fitted"] != 1.0
    assert strong["weight"] < weak["weight"]
    assert abs(math.log(strong["factor"])) < abs(math.log(weak["factor"])) < abs(math.log(weak["fitted"]))
