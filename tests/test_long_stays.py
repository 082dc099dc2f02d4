"""A phone heard for hours lists only its first 64 bursts (payload v2, docs/mqtt.md); the hub
must still see the whole stay: staff with a fixed address are staff, not 2-hour visitors."""

from __future__ import annotations

from footfall.hub.analysis import sessions_from
from footfall.hub.sweeps import scans_of
from footfall.schema import MAX_BURST_OFFSETS

T0 = 1_793_000_000.0  # a Monday morning, UTC


def long_visit(hours: float, every_s: float = 120.0) -> dict:
    length = hours * 3600.0
    n = int(length // every_s) + 1
    minutes: list[int | None] = [None] * (int((T0 + length) // 60) - int(T0 // 60) + 1)
    for k in range(n):
        minutes[int((T0 + k * every_s) // 60) - int(T0 // 60)] = -50
    return {
        "device": "f" * 32,
        "sensor": "s1",
        "randomized": False,
        "first_seen": T0,
        "last_seen": T0 + (n - 1) * every_s,
        "burst_offsets": [k * every_s for k in range(min(n, MAX_BURST_OFFSETS))],
        "rssi_minutes": minutes,
        "channels": [1],
    }


def test_scans_go_on_after_the_listed_bursts_until_the_last_sighting() -> None:
    v = long_visit(8.0)
    scans = scans_of([v])
    assert scans[0][0] == T0 and scans[-1][0] == v["last_seen"]
    # One scan per heard minute after the 64th burst: as many as the phone made.
    assert abs(len(scans) - (8 * 3600 / 120 + 1)) <= 2
    later = [t for t, _ in scans[MAX_BURST_OFFSETS - 1 :]]
    assert all(b - a >= 59.0 for a, b in zip(later, later[1:], strict=False))
    assert all(s[1] == {"s1": -50.0, "s1/1": -50.0} for s in scans)


def test_every_heard_minute_is_a_scan_even_without_a_reading() -> None:
    # Scanning every 30 s for 2 hours: one scan per minute after the 64th burst, none skipped;
    # -128 is "heard, no RSSI reading" (the scan counts, without a signal).
    v = long_visit(2.0, every_s=30.0)
    v["rssi_minutes"] = [-128 if m is not None and i % 2 else m for i, m in enumerate(v["rssi_minutes"])]
    scans = scans_of([v])
    after = [t for t, _ in scans if t > T0 + 63 * 30.0]
    assert len(after) >= (2 * 3600 - 64 * 30) / 60 - 2
    assert any(r == {} for _, r in scans)


def test_a_shift_long_stay_is_staff_and_a_short_one_is_not() -> None:
    [shift] = sessions_from([], [long_visit(8.0)])
    assert shift.staff and shift.last - shift.first > 7.9 * 3600
    # Three hours lists more bursts than the payload carries: the stay keeps its end.
    [visit] = sessions_from([], [long_visit(3.0)])
    assert not visit.staff and visit.last - visit.first > 2.9 * 3600


def test_a_shopper_back_in_the_afternoon_is_not_staff() -> None:
    morning = long_visit(0.3)
    afternoon = long_visit(0.3)
    for k in ("first_seen", "last_seen"):
        afternoon[k] += 4.5 * 3600
    stays = sessions_from([], [morning, afternoon])
    assert len(stays) == 2 and not any(s.staff for s in stays)
    # A shift with a 45-minute lunch break is hours of presence: staff.
    am, pm = long_visit(3.0), long_visit(3.5)
    for k in ("first_seen", "last_seen"):
        pm[k] += 3.75 * 3600
    [shift] = sessions_from([], [am, pm])
    assert shift.staff


def test_relink_keeps_exclusions_and_their_reasons(tmp_path) -> None:
    """Through the hub's own job on a simulated store: fixed-address staff phones are excluded
    as staff, and an operator's exclusion keeps its reason when the day is linked again."""
    from footfall.hub import devices, link
    from footfall.tools.evaluate_pipeline import Scenario, ingest, simulate

    run = simulate(Scenario(seed=21, scale=0.5, randomized_share=0.6, sensors=2), tmp_path)
    writer, _ = ingest(run, tmp_path / "hub.db")
    conn = writer.conn
    link.relink(conn, writer.config, since=0)
    # Two staff phones and two fixed devices, all with a fixed address.
    staff = {r[0] for r in conn.execute("SELECT device_key FROM devices WHERE excluded = 1 AND randomized = 0")}
    assert len(staff) >= 4
    key = conn.execute(
        "SELECT device_key FROM devices WHERE excluded = 0 AND randomized = 0 ORDER BY visit_count DESC LIMIT 1"
    ).fetchone()[0]
    assert devices.exclude(conn, key, "manual: the shop's tablet")
    conn.commit()
    link.relink(conn, writer.config, since=0)
    row = conn.execute("SELECT excluded, excluded_reason FROM devices WHERE device_key = ?", (key,)).fetchone()
    assert tuple(row) == (1, "manual: the shop's tablet")
    assert staff <= {r[0] for r in conn.execute("SELECT device_key FROM devices WHERE excluded = 1")}


def test_staff_found_on_the_estimation_pass_excludes_only_keys_that_are_mostly_staff() -> None:
    """The estimation pass joins generously: a shopper's scan may land in the clerk's track.
    The shopper's own key (identity pass) must not be left out for that one visit."""
    from types import SimpleNamespace

    from footfall.hub.link import _identity_keys

    # Estimation pass: the clerk's track "E" holds visits 1-6; visit 6 is really the shopper's.
    estimation = {f"v{i}": "E" for i in range(1, 7)} | {"v7": "S", "v8": "S", "v9": "S"}
    # Identity pass: the clerk is split in two keys (A, B), the shopper's visits 6-9 are key C.
    identity = {"v1": "A", "v2": "A", "v3": "A", "v4": "B", "v5": "B"} | {f"v{i}": "C" for i in range(6, 10)}
    an = SimpleNamespace(estimation_keys=estimation, keys=identity, sessions=[])
    out = _identity_keys(an, {"E": "staff (inside for 7.5 h on one day)"})
    assert set(out) == {"A", "B"}
    assert out["A"].startswith("staff")
