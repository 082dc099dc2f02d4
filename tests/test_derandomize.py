"""The device linker: real captures, a simulated day, and the rules it must never break."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from footfall.hub.derandomize import (
    Linker,
    LinkSettings,
    link,
    link_with_stats,
    seq_continues,
)
from footfall.hub.linked_devices import LinkingEstimator, device_sessions, estimate_unique, peak_concurrency

_ids = itertools.count()


def visit(
    device: str,
    first: float,
    last: float | None = None,
    *,
    fp: str = "fpA",
    seq: tuple[int | None, int | None] = (None, None),
    rssi: float = -60.0,
    randomized: bool = True,
    sensor: str = "s1",
    ssids: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": f"v{next(_ids)}",
        "device": device,
        "sensor": sensor,
        "randomized": randomized,
        "first_seen": first,
        "last_seen": first if last is None else last,
        "fingerprint": fp,
        "seq_first": seq[0],
        "seq_last": seq[1],
        "rssi_mean": rssi,
        "rssi_max": int(rssi),
        "ssid_hashes": ssids or [],
        "inside_s": 0.0,
        **extra,
    }


def keys_of(visits: list[dict[str, Any]], settings: LinkSettings | None = None) -> list[str]:
    keys = link(visits, settings)
    return [keys[v["id"]] for v in visits]


# -- rules -------------------------------------------------------------------------------------


def test_concurrent_macs_with_the_same_fingerprint_are_never_merged() -> None:
    # Two phones of one model, both heard for minutes at the same time, identical RSSI.
    a = visit("mac-a", 0, 300, seq=(10, 400))
    b = visit("mac-b", 5, 320, seq=(900, 1300))
    c = visit("mac-c", 100, 200, seq=(401, 450))  # seq continues a, but overlaps a: no
    ka, kb, kc = keys_of([a, b, c])
    assert len({ka, kb, kc}) == 3


def test_rotation_with_sequence_continuity_is_linked_across_modulo() -> None:
    # iPhone 7 / iOS 15: a new MAC per scan, the counter continues (wrapping at 4096).
    vs = [
        visit("m1", 0, 0.4, seq=(4000, 4030)),
        visit("m2", 150, 150.4, seq=(4060, 4090)),
        visit("m3", 320, 320.4, seq=(5, 40)),  # 4090 -> 5 wraps around 4096
    ]
    assert len(set(keys_of(vs))) == 1
    assert seq_continues(4090, 5, 32)
    assert not seq_continues(4090, 3000, 32)


def test_globally_administered_macs_stay_their_own_devices() -> None:
    vs = [
        visit("g1", 0, 100, seq=(10, 50), randomized=False),
        visit("g2", 110, 200, seq=(51, 90), randomized=False),
        visit("g1", 1200, 1250, seq=(200, 220), randomized=False),
    ]
    keys = keys_of(vs)
    assert keys == ["g1", "g2", "g1"]
    # ...unless the data is known to have lost the bit (the anonymized public captures): then
    # g2 continuing g1's counter 10 s later is g1 again.
    assert set(keys_of(vs, LinkSettings(trust_la_bit=False))) == {"g1"}


def test_a_sweep_of_per_burst_macs_is_one_phone_and_two_phones_sweeping_together_are_two() -> None:
    # iPhone 11-15: a new MAC and counter for every channel burst, ~45 ms apart.
    one = [
        visit(f"b{i}", 10 + 0.045 * i, 10 + 0.045 * i + 0.02, seq=(i * 397 % 4096, i * 397 % 4096 + 1))
        for i in range(9)
    ]
    assert len(set(keys_of(one))) == 1
    # Two phones of that model sweeping in the same half second, 20 dB apart.
    near = [visit(f"n{i}", 10 + 0.045 * i, 10 + 0.045 * i + 0.02, rssi=-45) for i in range(9)]
    far = [visit(f"f{i}", 10.02 + 0.045 * i, 10.02 + 0.045 * i + 0.01, rssi=-68) for i in range(9)]
    keys = keys_of(near + far)
    assert len(set(keys[:9])) == 1 and len(set(keys[9:])) == 1 and keys[0] != keys[9]


def test_a_burst_heard_off_channel_too_stays_in_its_sweep() -> None:
    # A sensor with radios on channels 1, 6 and 11 hears a burst sent on channel 7 on its own
    # channel (-25 dBm) and, through the neighbour's filter, 20 dB weaker on 6 and 11: the
    # mean of those copies (-38) said "another phone" and split one sweep in two (real
    # captures, iPhone 11-M).
    one = []
    for i in range(12):
        t = 10 + 0.045 * i
        if i % 3 == 0:
            one.append(visit(f"b{i}", t, t + 0.02, rssi=-38.3, rssi_max=-25, channels=[6, 11]))
        else:
            one.append(visit(f"b{i}", t, t + 0.02, rssi=-24.0 + i % 2, channels=[6]))
    assert len(set(keys_of(one))) == 1


def test_a_walk_past_is_not_absorbed_by_a_shopper_inside() -> None:
    # A shopper's phone scans inside for ten minutes; one scan of the same model from the street.
    shopper = [visit(f"s{i}", 60.0 * i, 60.0 * i + 0.3, rssi=-55) for i in range(10)]
    street = visit("p1", 250.0, 250.3, rssi=-85)
    vs = shopper + [street]

    def inside(sweep) -> float:
        return 0.05 if max(sweep.peak.values()) < -80 else 0.95

    keys = Linker(inside=inside).feed(sorted(vs, key=lambda v: v["first_seen"]))
    assert len({keys[v["id"]] for v in shopper}) == 1
    assert keys[street["id"]] not in {keys[v["id"]] for v in shopper}


def test_every_decision_says_how_likely_the_sweep_was_a_new_device() -> None:
    vs = [visit(f"m{i}", 40.0 * i, 40.0 * i + 0.3) for i in range(5)]
    linker = Linker(record=True)
    linker.feed(vs)
    decisions = linker.decisions or []
    assert len(decisions) == 5
    assert decisions[0].p_new == 1.0  # nobody to continue
    assert all(0.0 <= d.p_new <= 1.0 for d in decisions)
    assert all(d.p_new < 0.5 for d in decisions[1:])  # one phone, scanning every 40 s


def test_per_scan_rotation_links_by_timing_when_alone() -> None:
    # One phone, new MAC and random counter every scan, scans 30-200 s apart.
    vs = [
        visit(f"m{i}", t, t + 0.4, seq=(s, s + 2))
        for i, (t, s) in enumerate([(0, 100), (40, 3000), (75, 1700), (260, 20), (300, 2222), (480, 999)])
    ]
    assert len(set(keys_of(vs))) == 1


def test_a_long_silence_is_a_new_device() -> None:
    vs = [visit("m1", 0, 10), visit("m2", 2000, 2010)]
    assert len(set(keys_of(vs))) == 2


def test_ssid_links_across_fingerprints_and_picks_the_chain_with_the_same_ssids() -> None:
    vs = [
        visit("m1", 0, 1, fp="broadcast", ssids=["h-home"]),
        visit("m2", 20, 21, fp="directed", ssids=["h-home", "h-work"]),
    ]
    assert len(set(keys_of(vs))) == 1
    two = [
        visit("z1", 0, 15, fp="broadcast", ssids=["h-cafe"], rssi=-70),  # overlaps x1: two phones
        visit("x1", 10, 11, fp="broadcast", ssids=["h-home"], rssi=-60),
        visit("x2", 40, 41, fp="broadcast", ssids=["h-cafe"], rssi=-60),
    ]
    keys = keys_of(two)
    assert keys[2] == keys[0] != keys[1]


def test_same_mac_on_several_sensors_is_one_device() -> None:
    vs = [visit("m1", 0, 60, sensor="s1"), visit("m1", 2, 58, sensor="s2", rssi=-80)]
    assert len(set(keys_of(vs))) == 1


def test_incremental_feeding_gives_the_offline_keys() -> None:
    vs = []
    t = 0.0
    for i in range(60):
        t += 17 + (i * 37) % 90
        vs.append(
            visit(
                f"p{i % 7}-{i}",
                t,
                t + (i % 3),
                seq=((i * 611) % 4096, (i * 611 + 3) % 4096),
                fp=f"fp{i % 3}",
                rssi=-50 - (i % 5) * 6,
            )
        )
    offline = link(vs)
    linker = Linker()
    online: dict[str, str] = {}
    for i in range(0, len(vs), 7):
        online.update(linker.feed(vs[i : i + 7]))
    assert online == offline


def _two_phones(minutes: int, last_rssi: float = -62.0) -> list[dict[str, Any]]:
    """Two phones of one model heard together from the start (two tracks), a scan each a minute
    from a new MAC, 14 dB apart; then one scan whose signal lies between the two."""
    vs = [visit("a0", 0.0, 50.0, rssi=-55.0), visit("b0", 5.0, 55.0, rssi=-69.0)]
    for k in range(1, minutes):
        vs.append(visit(f"a{k}", 60.0 * k, 60.0 * k + 0.5, rssi=-55.0))
        vs.append(visit(f"b{k}", 60.0 * k + 30, 60.0 * k + 30.5, rssi=-69.0))
    t = 60.0 * (minutes - 1) + 45
    vs.append(visit("c", t, t + 0.5, rssi=last_rssi))
    return vs


def test_a_long_track_in_doubt_goes_on_under_a_new_key() -> None:
    # After 40 minutes, a scan between the two phones' signals: the identity pass does not bet
    # one phone's key on it (a key should be one person), the track goes on under a new key.
    vs = _two_phones(40)
    joined, st0 = link_with_stats(vs, LinkSettings())
    rekey = LinkSettings(rekey_below=0.7)
    keys, st = link_with_stats(vs, rekey)
    assert st0.rekeys == 0 and joined[vs[-1]["id"]] == "b0"
    assert st.rekeys == 1 and keys[vs[-1]["id"]] == "c"
    assert {k: v for k, v in keys.items() if k != vs[-1]["id"]} == {
        k: v for k, v in joined.items() if k != vs[-1]["id"]
    }
    # The track goes on under its new key: the next scan of that phone, and a MAC heard before the
    # new key that comes back.
    later = [
        visit("b40", 60.0 * 40 + 30, 60.0 * 40 + 30.5, rssi=-69.0),
        visit("b39", 60.0 * 41 + 30, 60.0 * 41 + 31, rssi=-69.0),
    ]
    linker = Linker(rekey)
    linker.feed(vs)
    after = linker.feed(later)
    assert after[later[0]["id"]] == "c" and after[later[1]["id"]] == "c"
    # Young tracks are not cut: within rekey_after_s (30 min) the scan joins as before.
    short = _two_phones(10)
    assert link(short, rekey)[short[-1]["id"]] == link(short)[short[-1]["id"]] == "b0"
    # Keys never change once given: fed in batches, the same keys.
    online: dict[str, str] = {}
    linker = Linker(rekey)
    for i in range(0, len(vs), 9):
        online.update(linker.feed(vs[i : i + 9]))
    assert online == keys


def test_estimate_unique_bounds_and_confidence() -> None:
    vs = [
        visit("a1", 0, 100, seq=(1, 50)),
        visit("a2", 120, 200, seq=(52, 90)),
        visit("b1", 10, 110, seq=(700, 800)),
        visit("g", 0, 50, randomized=False),
    ]
    est = estimate_unique(vs, 0, 300)
    assert (est.count, est.stable, est.randomized) == (3, 1, 2)
    assert est.low <= est.count <= est.high == 4
    assert 0 <= est.confidence <= 1
    assert peak_concurrency([(0, 100), (10, 110), (120, 200)], 1.0) == 2
    assert estimate_unique(vs, 1000, 2000).count == 0


def test_device_sessions_rebuild_inside_time_of_per_scan_macs() -> None:
    # A per-scan phone: every MAC a fraction of a second, strong, 40 s apart, for 4 minutes.
    vs = [visit(f"m{i}", i * 40.0, i * 40.0 + 0.3, rssi=-55) for i in range(7)]
    keys, _ = link_with_stats(vs)
    sessions = device_sessions(vs, keys)
    assert len(sessions) == 1 and sessions[0].visitor and sessions[0].inside_s >= 240
    naive = device_sessions(vs, {})
    assert not any(s.visitor for s in naive)


def test_linking_estimator_reads_missing_evidence_from_the_database(tmp_path: Path) -> None:
    from footfall.hub import store

    conn = store.connect(tmp_path / "hub.db")
    est = LinkingEstimator(conn=conn)
    rows = [visit("m1", 0, 100, seq=(1, 60)), visit("m2", 130, 200, seq=(65, 100)), visit("m3", 5, 90)]
    for r in rows:
        conn.execute(
            """INSERT INTO sensor_visits (id, site, sensor, device, randomized, first_seen, last_seen, dwell_s,
                   inside_s, sightings, rssi_max, rssi_mean, class, long_stay, fingerprint, ie_ids, seq_first,
                   seq_last, channels, ssid_hashes, received)
               VALUES (?, 'shop', 's1', ?, 1, ?, ?, 0, 0, 3, -60, -60, 'passerby', 0, 'fpA', '[]', ?, ?, '[6]',
                   '[]', 0)""",
            (r["id"], r["device"], r["first_seen"], r["last_seen"], r["seq_first"], r["seq_last"]),
        )
    # merge.py hands over a subset of the columns, without the sequence numbers.
    subset = [{k: r[k] for k in ("id", "device", "randomized", "first_seen", "last_seen")} for r in rows]
    keys = [est.device_key(r) for r in sorted(subset, key=lambda r: r["first_seen"])]
    assert keys == ["m1", "m3", "m1"]
    assert est.device_key(subset[0]) == "m1"  # stable on re-aggregation


# -- real captures and a simulated day -------------------------------------------------------------


def test_real_captures_beat_the_baselines(captures: list[Path]) -> None:
    """Both clocks; the aligned one (eleven phones together) is the case that tests linking, and
    there the linker must beat one-device-per-MAC and both silence rules."""
    from footfall.tools.evaluate import evaluate_captures

    rec = evaluate_captures(captures, clock="recorded")
    assert rec.true_devices == 11 and rec.naive_count > 1000
    assert rec.linker["v_measure"] >= 0.95, rec.linker  # measured: 0.958
    assert rec.estimated <= 20, rec  # measured: 17
    ali = evaluate_captures(captures, clock="aligned")
    # Issue 12's target: 11 +/- 3 devices, V-measure >= 0.80. Measured: 14 (11 phones, one of
    # them recorded twice, weeks apart), V 0.812.
    assert 8 <= ali.estimated <= 14, ali
    assert ali.linker["v_measure"] >= 0.80, ali.linker
    for base in (ali.naive, ali.silence, ali.silence_fp):
        assert ali.linker["v_measure"] > base["v_measure"], (ali.linker, base)


def test_simulated_day_beats_the_baselines(tmp_path: Path) -> None:
    """A held-out seed (11), the hub's own steps (inside model, link model fitted on the day)."""
    from footfall.tools.evaluate import evaluate_simulation
    from footfall.tools.simulator import simulate_day

    simulate_day(tmp_path, seed=11, sensors=2, scale=0.5)
    s = evaluate_simulation(tmp_path)
    assert s.true_devices > 100
    assert s.naive_count > 3 * s.true_devices  # per-burst MACs inflate the naive count
    # The device keys split rather than join (LinkSettings.identity_bias): more keys than phones,
    # far fewer than MACs; people are estimated elsewhere (hub/estimate.py, tests/test_estimates.py).
    assert s.true_devices <= s.estimated <= 2 * s.true_devices, s
    assert s.linker["v_measure"] > s.naive["v_measure"], s
    assert s.linker["v_measure"] > s.silence["v_measure"], s
    assert s.linker["ari"] > s.naive["ari"], s


def test_a_busy_one_sensor_store_beats_the_baselines(tmp_path: Path) -> None:
    """Held-out seed 25 (1,000 visitors and passers-by a day, 95 % of phones randomizing, one
    sensor): phones of one model in the shop together, nothing but one signal to tell them apart.
    Before long tracks in doubt got a new key the linker scored below one-device-per-MAC here
    (V 0.724 against 0.734); measured now 0.776."""
    from footfall.tools.evaluate import evaluate_simulation
    from footfall.tools.evaluate_pipeline import scenario
    from footfall.tools.simulator import simulate_day

    sc = scenario(25)
    simulate_day(
        tmp_path, seed=25, sensors=sc.sensors, scale=sc.scale, randomized_share=sc.randomized_share, days=sc.days
    )
    s = evaluate_simulation(tmp_path)
    assert s.linker["v_measure"] > s.naive["v_measure"] + 0.02, (s.linker, s.naive)
    assert s.linker["v_measure"] > s.silence["v_measure"], s
    assert s.linker["v_measure"] > s.silence_fp["v_measure"], s


def test_linking_estimator_counts_from_the_store_and_warms_up(tmp_path: Path) -> None:
    from footfall.hub import store

    conn = store.connect(tmp_path / "hub.db")
    est = LinkingEstimator(conn=conn)
    svs = [visit("m1", 0, 100, seq=(1, 60)), visit("m2", 130, 200, seq=(65, 100)), visit("m3", 5, 90)]
    svs.append(visit("g1", 10, 50, randomized=False))
    for i, sv in enumerate(svs, start=1):
        key = est.device_key(sv)
        conn.execute(
            """INSERT INTO sensor_visits (id, site, sensor, device, randomized, first_seen, last_seen, dwell_s,
                   inside_s, sightings, rssi_max, rssi_mean, class, long_stay, fingerprint, ie_ids, seq_first,
                   seq_last, channels, ssid_hashes, received, visit_id)
               VALUES (?, 'shop', 's1', ?, ?, ?, ?, 0, 0, 3, -60, -60, 'visitor', 0, 'fpA', '[]', ?, ?, '[6]',
                   '[]', 0, ?)""",
            (
                sv["id"],
                sv["device"],
                int(sv["randomized"]),
                sv["first_seen"],
                sv["last_seen"],
                sv["seq_first"],
                sv["seq_last"],
                i,
            ),
        )
        conn.execute(
            """INSERT INTO visits (id, site, device, device_key, randomized, first_seen, last_seen, dwell_s, inside_s,
                   class, long_stay, excluded, best_sensor, best_rssi, sensors, n_sensor_visits, day, hour)
               VALUES (?, 'shop', ?, ?, ?, ?, ?, 0, 0, 'visitor', 0, 0, 's1', -60, 's1', 1, '1970-01-01', 0)""",
            (i, sv["device"], key, int(sv["randomized"]), sv["first_seen"], sv["last_seen"]),
        )
    conn.commit()
    u = est.estimate_unique(conn, 0, 1000)
    assert (u.count, u.stable, u.randomized, u.high) == (3, 1, 2, 4)
    assert u.low <= u.count <= u.high
    # A restarted hub: a new MAC continuing m2's counter joins the restored device.
    fresh = LinkingEstimator(conn=conn)
    assert fresh.warm(conn, now=300) == 4
    assert fresh.device_key(visit("m4", 260, 300, seq=(104, 150))) == "m1"
