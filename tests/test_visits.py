import itertools
import random

import pytest

from footfall import payloads, schema
from footfall.edge_agent.visits import VisitSettings, VisitTracker, channel_mask, freq_to_channel

FP = "0123456789abcdef"
IES = (0, 1, 50, 3, 45, 127)


class Model:
    fingerprint = FP
    ie_ids = IES


def tracker(**kw):
    out: list[dict] = []
    t = VisitTracker("site1", "s1", out.append, VisitSettings(**kw))
    return t, out


_SEQ = itertools.count()


def see(t, ts, device="d1", rssi=-50, seq=None, randomized=False):
    # a phone numbers its frames: each sighting its own sequence number unless a test says
    seq = next(_SEQ) % 4096 if seq is None else seq
    t.observe(ts, (device, randomized, None), rssi, seq, Model, channel_mask(6), None)


def test_visitor_with_strong_signal_long_enough():
    t, out = tracker(inside_rssi=-70, min_inside_s=60, gap_s=300)
    for i in range(10):  # 9 minutes of probes every minute, strong
        see(t, 1000 + 60 * i, rssi=-55, seq=i)
    t.flush()
    (v,) = out
    schema.validate(payloads.dumps(v), "visit")
    assert v["class"] == "visitor"
    assert v["dwell_s"] == 540
    assert v["inside_s"] == 540
    assert v["sightings"] == 10
    assert v["rssi_max"] == -55
    assert v["seq_first"] == 0 and v["seq_last"] == 9
    assert v["channels"] == [6]
    assert v["closed_by"] == "shutdown"


def test_passerby_weak_or_short():
    t, out = tracker(inside_rssi=-70, min_inside_s=60)
    for i in range(5):
        see(t, 100 + 20 * i, device="weak", rssi=-80)
    see(t, 100, device="brief", rssi=-50)
    see(t, 130, device="brief", rssi=-50)
    t.flush()
    by = {v["device"]: v for v in out}
    assert by["weak"]["class"] == "passerby"
    assert by["brief"]["class"] == "passerby"
    assert by["brief"]["inside_s"] == 30


def test_one_weak_frame_does_not_break_inside_time():
    t, out = tracker(inside_rssi=-70, inside_gap_s=180)
    see(t, 0, rssi=-60)
    see(t, 50, rssi=-85)  # faded frame
    see(t, 100, rssi=-60)
    t.flush()
    assert out[0]["inside_s"] == 100


def test_gap_closes_a_visit_and_ids_are_deterministic():
    t, out = tracker(gap_s=300)
    see(t, 0)
    see(t, 100)
    see(t, 1000)  # after the gap: new visit; the first closes by gap
    t.flush()
    assert [v["closed_by"] for v in out] == ["gap", "shutdown"]
    assert out[0]["last_seen"] == 100
    assert out[0]["id"] == payloads.visit_id("site1", "s1", "d1", 0)
    assert out[0]["id"] != out[1]["id"]


def test_expire_runs_on_capture_time_without_frames_of_that_device():
    t, out = tracker(gap_s=300)
    see(t, 0, device="a")
    for i in range(1, 40):
        see(t, 20 * i, device="b")
    assert [v["device"] for v in out] == ["a"]


def test_long_stay_flag_and_max_duration_split():
    t, out = tracker(long_stay_s=4 * 3600, max_visit_s=12 * 3600, gap_s=600)
    for i in range(0, 13 * 3600, 300):
        see(t, i, device="staff")
    t.flush()
    assert out[0]["closed_by"] == "max_duration"
    assert out[0]["long_stay"] is True
    assert len(out) == 2


def test_memory_bound_evicts_oldest():
    t, out = tracker(max_devices=100)
    for i in range(250):
        see(t, i * 0.01, device=f"d{i}")
    assert len(t.open) <= 100
    assert out and all(v["closed_by"] == "evicted" for v in out)
    assert out[0]["device"] == "d0"


def test_presence_counts():
    t, _ = tracker(inside_rssi=-70)
    see(t, 100, device="in", rssi=-50)
    see(t, 100, device="out", rssi=-85)
    see(t, 10, device="old", rssi=-50)
    assert t.presence(110, 60) == (2, 1)


def test_settings_update_from_config():
    s = VisitSettings()
    assert s.update({"inside_rssi": -65, "gap_s": 600, "unknown": 1}) == ["inside_rssi"]
    assert s.inside_rssi == -65


def test_freq_to_channel():
    assert [freq_to_channel(f) for f in (2412, 2437, 2462, 2484, 5180, None)] == [1, 6, 11, 14, 36, None]
    assert channel_mask(None) == channel_mask(0) == 0


def test_one_channel_function_with_distinct_identifiers_per_band():
    from footfall.edge_agent import parse

    # the parser's Probe.channel and the visits' channel sets come from one function
    assert parse.freq_to_channel is freq_to_channel
    assert [freq_to_channel(f) for f in (5745, 5765, 5785, 5805, 5825)] == [149, 153, 157, 161, 165]
    # 6 GHz channel 1 and 5 (5955, 5975 MHz) are not 2.4 GHz channel 1 and 5, nor 5 GHz numbers
    assert [freq_to_channel(f) for f in (5955, 5975, 5935, 7115)] == [1001, 1005, 1002, 1233]
    # off the 5 MHz raster, or 5 GHz numbers that would collide with 2.4 GHz ones: unknown
    # 6 GHz off its 20 MHz grid (5960 would be "channel 2" again): unknown too
    assert [freq_to_channel(f) for f in (2413, 5040, 4920, 8000, 5960, 5965)] == [None] * 6
    ids = {
        freq_to_channel(f) for f in [*range(2412, 2473, 5), 2484, *range(5160, 5886, 5), 5935, *range(5955, 7116, 20)]
    }
    assert None not in ids and len(ids) == 13 + 1 + 146 + 1 + 59  # every frequency its own identifier
    masks = [channel_mask(c) for c in ids]
    assert len(set(masks)) == len(ids) and all(m and m & (m - 1) == 0 for m in masks)


def test_visit_channels_keep_bands_apart():
    t, out = tracker()
    freqs = (2412, 5955, 2437, 5975, 5745, 5765, 5785, 5805, 5825, 5180, 6415)
    for k, freq in enumerate(freqs):
        t.observe(100.0 + k, ("d1", False, None), -50, k, Model, channel_mask(freq_to_channel(freq)), None)
    t.flush()
    assert out[0]["channels"] == [1, 6, 36, 149, 153, 157, 161, 165, 1001, 1005, 1093]
    # a reused slot starts with no channel of the previous visit, 6 GHz ones included
    t.observe(500.0, ("d2", False, None), -50, 1, Model, channel_mask(1), None)
    t.flush()
    assert out[1]["channels"] == [1]


def test_same_transmission_heard_twice_counts_once():
    t, out = tracker(inside_rssi=-70, duplicate_s=1.0)
    ch1, ch6 = channel_mask(1), channel_mask(6)
    # seq 10 heard by the radio on channel 1 (weak, leaking in) and 4 us later on channel 6
    t.observe(100.0, ("d1", False, None), -60, 10, Model, ch1, None)
    t.observe(100.000004, ("d1", False, None), -40, 10, Model, ch6, None)
    # a copy delivered slightly out of order, and a retry 0.5 s later: still seq 10
    t.observe(99.999999, ("d1", False, None), -61, 10, Model, ch1, None)
    t.observe(100.5, ("d1", False, None), -45, 10, Model, ch6, None)
    t.observe(100.6, ("d1", False, None), -45, 11, Model, ch6, None)  # the next probe
    t.observe(102.0, ("d1", False, None), -45, 11, Model, ch6, None)  # same number, 1.4 s later
    assert t.duplicates == 3
    t.flush()
    v = out[0]
    assert v["sightings"] == 3
    # the copies' readings still count: strongest level, both radios' channels
    assert v["rssi_max"] == -40 and v["channels"] == [1, 6]
    assert v["rssi_mean"] == pytest.approx((-60 - 40 - 61 - 45 - 45 - 45) / 6, abs=0.05)
    # no sequence number, no duplicate test
    t.observe(200.0, ("d2", False, None), -50, None, Model, ch6, None)
    t.observe(200.1, ("d2", False, None), -50, None, Model, ch6, None)
    t.flush()
    assert out[1]["sightings"] == 2 and t.duplicates == 3


# Per-burst and per-minute evidence (visit payload version 2).
M0 = 1_700_000_040.0  # a UTC minute boundary


def test_bursts_offsets_and_minutes_of_a_visit():
    t, out = tracker(gap_s=600, burst_s=1.0)
    # (seconds after M0, rssi): two frames a burst; minute 2 silent; minute 4 heard without signal.
    frames = [(5, -60), (5.4, -58), (30, -70), (65, -57), (65.5, -52), (200, -56), (200.9, -55), (250, None)]
    for dt, rssi in frames:
        see(t, M0 + dt, rssi=rssi)
    t.flush()
    (v,) = out
    assert v["v"] == 2
    assert v["bursts"] == 5
    assert v["burst_offsets"] == [0.0, 25.0, 60.0, 195.0, 245.0]
    assert v["rssi_minutes"] == [-58, -52, None, -55, -128]
    assert v["rssi_max"] == -52 and v["sightings"] == 8
    schema.validate(payloads.dumps(v), "visit")
    assert not t._minute_table and not t._offset_table  # popped at close


def test_one_burst_one_minute_needs_no_side_table():
    t, out = tracker()
    see(t, M0 + 1, device="a", rssi=-70)
    see(t, M0 + 1.2, device="a", rssi=-65)
    see(t, M0 + 2, device="b", rssi=None)
    # Two bursts over three minutes still fit the small columns.
    see(t, M0 + 59.5, device="c", rssi=-80)
    see(t, M0 + 130, device="c", rssi=-75)
    assert not t._minute_table and not t._offset_table
    t.flush()
    by = {v["device"]: v for v in out}
    assert (by["a"]["bursts"], by["a"]["burst_offsets"], by["a"]["rssi_minutes"]) == (1, [0.0], [-65])
    assert (by["b"]["rssi_max"], by["b"]["rssi_minutes"]) == (None, [-128])
    assert (by["c"]["bursts"], by["c"]["burst_offsets"], by["c"]["rssi_minutes"]) == (2, [0.0, 70.5], [-80, None, -75])
    for v in out:
        schema.validate(payloads.dumps(v), "visit")


def test_burst_offsets_stop_at_64_and_bursts_keep_counting():
    t, out = tracker(gap_s=600, burst_s=1.0, max_visit_s=10 * 3600)
    for k in range(100):
        see(t, M0 + 7.25 * k)
    t.flush()
    (v,) = out
    assert v["bursts"] == 100
    assert len(v["burst_offsets"]) == 64 and v["burst_offsets"][-1] == 456.7  # 63 * 7.25, truncated
    schema.validate(payloads.dumps(v), "visit")


def test_minute_list_is_bounded_and_a_visit_closes_before_outgrowing_it():
    t, out = tracker(gap_s=600, max_visit_s=48 * 3600, long_stay_s=4 * 3600)
    for k in range(0, 30 * 60):  # a frame every minute for 30 h
        see(t, M0 + 30 + 60 * k, device="fixed")
    t.flush()
    assert [v["closed_by"] for v in out] == ["max_duration", "shutdown"]
    assert len(out[0]["rssi_minutes"]) == schema.MAX_RSSI_MINUTES - 1
    assert all(m == -50 for v in out for m in v["rssi_minutes"])
    for v in out:
        schema.validate(payloads.dumps(v), "visit")


def test_minutes_when_the_times_round_onto_a_minute_boundary():
    t, out = tracker()
    see(t, M0 - 0.0003, device="a", rssi=-60)  # rounds to M0: joins minute M0
    see(t, M0 + 0.5, device="a", rssi=-70)
    see(t, M0 + 119.9996, device="a", rssi=-65)  # rounds to M0 + 120
    t.flush()
    (v,) = out
    assert (v["first_seen"], v["last_seen"]) == (M0, M0 + 120)
    assert v["rssi_minutes"] == [-60, -65, -65]
    schema.validate(payloads.dumps(v), "visit")


def reference_visits(frames, gap_s, burst_s):
    """The evidence of each visit, computed the slow and obvious way from its frames."""
    by_device: dict[str, list] = {}
    for ts, device, rssi in frames:
        by_device.setdefault(device, []).append((ts, rssi))
    out = {}
    for device, seen in by_device.items():
        visits = [[seen[0]]]
        for prev, cur in itertools.pairwise(seen):
            if cur[0] - prev[0] > gap_s:
                visits.append([])
            visits[-1].append(cur)
        for vf in visits:
            first = vf[0][0]
            starts = [first] + [cur[0] for prev, cur in itertools.pairwise(vf) if cur[0] - prev[0] > burst_s]
            m0 = int(first // 60)
            minutes: list = [None] * (int(vf[-1][0] // 60) - m0 + 1)
            for ts, rssi in vf:
                k = int(ts // 60) - m0
                value = -128 if rssi is None else rssi
                minutes[k] = value if minutes[k] is None else max(minutes[k], value)
            offsets = [int((s - first) * 10) / 10 for s in starts[:64]]
            out[(device, round(first, 3))] = (len(starts), offsets, minutes)
    return out


def test_evidence_matches_a_reference_on_random_traffic():
    rng = random.Random(3)
    frames = []
    for d in range(12):
        ts = M0 + rng.uniform(0, 600)
        while ts < M0 + 4 * 3600:
            for _ in range(rng.choice((1, 1, 2, 3))):  # a burst of frames
                frames.append((round(ts, 2) + 0.005, f"d{d}", rng.choice((None, *range(-90, -40)))))
                ts += rng.uniform(0.01, 0.3)
            roll = rng.random()
            ts += (
                rng.uniform(1.5, 70) if roll < 0.7 else rng.uniform(60, 400) if roll < 0.97 else rng.uniform(700, 1500)
            )
    frames.sort()
    t, out = tracker(gap_s=600, burst_s=1.0)
    for ts, device, rssi in frames:
        see(t, ts, device=device, rssi=rssi)
    t.flush()
    want = reference_visits(frames, 600, 1.0)
    assert len(out) == len(want) > 50
    assert any(len(v["rssi_minutes"]) > 3 for v in out) and any(v["bursts"] > 64 for v in out)
    for v in out:
        schema.validate(payloads.dumps(v), "visit")
        bursts, offsets, minutes = want[(v["device"], v["first_seen"])]
        assert v["bursts"] == bursts
        assert v["burst_offsets"] == pytest.approx(offsets, abs=0.1001)  # float32 offsets
        assert v["rssi_minutes"] == minutes
    assert not t._minute_table and not t._offset_table
