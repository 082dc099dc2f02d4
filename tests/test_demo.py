"""``footfall demo``: the first look (the shop's zone and hours, today has data, sensors shown as
replayed) and stopping it at any stage leaves nothing running.

A tiny shop (one or two days, a tenth of the default size) through the real agents, a real
private Mosquitto and the real hub, so each test takes seconds.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from footfall.hub import metrics_health, metrics_today, store, summaries
from footfall.tools.broker import mosquitto_path
from footfall.tools.demo import build, demo_hours, machine_tz, resolve_tz

REPO = Path(__file__).resolve().parent.parent
needs_mosquitto = pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed")


@pytest.mark.parametrize("hm", ["00:20", "03:00", "07:45", "10:59", "11:00", "16:30", "20:59", "23:10"])
def test_shop_is_open_at_any_hour(hm: str) -> None:
    h, m = map(int, hm.split(":"))
    opens, closes = demo_hours(dt.datetime(2026, 12, 4, h, m))
    assert 0 <= opens < closes <= 24 and closes - opens == 11
    # Open by now, and for an hour at least unless the day itself is younger than that.
    assert opens <= h + m / 60 and (h + m / 60 - opens >= 1 or opens == 0)


def test_zone_follows_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    monkeypatch.delenv("FOOTFALL_TZ", raising=False)
    assert machine_tz() == "Asia/Tokyo"
    assert resolve_tz(None) == "Asia/Tokyo"
    monkeypatch.setenv("FOOTFALL_TZ", "America/Lima")
    assert resolve_tz(None) == "America/Lima"
    assert resolve_tz("Europe/Paris") == "Europe/Paris"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert machine_tz() != "Not/AZone"  # falls through to the system's zone or UTC
    with pytest.raises(SystemExit):
        resolve_tz("Not/AZone")


@needs_mosquitto
def test_today_has_data_before_the_usual_opening_and_sensors_are_replayed(tmp_path: Path) -> None:
    # 03:30 in Tokyo (18:30 UTC the day before): with the old fixed 10-21 shop "today" was empty.
    tz = "Asia/Tokyo"
    local = dt.datetime.now(ZoneInfo(tz)).replace(hour=3, minute=30, second=0, microsecond=0) - dt.timedelta(days=1)
    now = local.timestamp()
    db, _ = build(tmp_path / "demo", days=1, scale=0.1, seed=3, tz=tz, now=now)
    conn = store.connect(db)
    try:
        summaries.refresh_summaries(conn, now=now)
        today = metrics_today.compare(conn, now=now, tz=tz)
        assert today["today"]["date"] == local.date().isoformat()
        assert today["today"]["visitors"] > 0 and today["today"]["passersby"] > 0
        assert max(r[0] for r in conn.execute("SELECT last_seen FROM sensor_visits")) <= now + 1
        health = metrics_health.sensor_health(conn, now=time.time())
        assert [s["status"] for s in health["sensors"]] == ["replayed", "replayed"]
        assert health["replayed"] == 2 and health["offline"] == 0
        # O2O: both scenarios ran against the reference partner over HTTP and found the day's
        # audience (the demo's agents compute the partner hash). At 03:30 the quiet hours hold
        # the contacts back; the whole demo's figures are in its output.
        runs = conn.execute("SELECT status, candidates FROM o2o_runs").fetchall()
        assert len(runs) == 2 and {r[0] for r in runs} == {"ok"}, runs
        assert sum(r[1] for r in runs) > 0
    finally:
        conn.close()


def _session_processes(sid: int) -> list[str]:
    """Every live process of session ``sid`` (the demo started in a session of its own), as
    "pid command"; children re-parented after the demo exited are still found by session."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        state, session = rest[0], int(rest[3])
        if session == sid and state != "Z":
            found.append(f"{stat.parent.name} {comm}")
    return found


@needs_mosquitto
@pytest.mark.parametrize(
    ("signum", "stage"),
    [
        (signal.SIGTERM, "simulating"),
        (signal.SIGTERM, "broker"),
        (signal.SIGINT, "broker"),
        # No cleanup code runs on SIGKILL: the kernel stops the broker (PR_SET_PDEATHSIG).
        (signal.SIGKILL, "broker"),
    ],
)
def test_stopping_the_demo_while_it_builds_leaves_nothing_running(
    tmp_path: Path, signum: signal.Signals, stage: str
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "footfall", "demo", "--dir", str(tmp_path / "demo"), "--days", "2", "--scale", "0.2"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        if stage == "simulating":
            line = proc.stdout.readline()
            assert line.startswith("simulating"), line
        else:
            # Signalled as soon as the private broker runs: the stage that used to leave it behind.
            while not any("mosquitto" in p for p in _session_processes(proc.pid)):
                assert proc.poll() is None and time.monotonic() < deadline, "the demo never started its broker"
                time.sleep(0.01)
        os.kill(proc.pid, signum)
        out, _ = proc.communicate(timeout=30)
        # The broker's own shutdown: after a SIGKILL, and after a signal that lands while
        # subprocess.Popen is still starting it (no handle to stop it with yet), it is the
        # kernel's death signal (PR_SET_PDEATHSIG) that stops it, a moment after the demo exits.
        gone = time.monotonic() + 5
        while (left := _session_processes(proc.pid)) and time.monotonic() < gone:
            time.sleep(0.05)
        assert left == [], f"still running after the demo exited: {left}"
        if signum == signal.SIGKILL:
            assert proc.returncode == -signum
        else:
            assert proc.returncode == 128 + signum, out
            assert "demo stopped" in out
    finally:
        if proc.poll() is None or _session_processes(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
