from footfall import schema
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


def see(t, ts, device="d1", rssi=-50, seq=1, randomized=False):
    t.observe(ts, (device, randomized, None), rssi, seq, Model, channel_mask(6), None)


def test_visitor_with_strong_signal_long_enough():
    t, out = tracker(inside_rssi=-70, min_inside_s=60, gap_s=300)
    for i in range(10):  # 9 minutes of probes every minute, strong
        see(t, 1000 + 60 * i, rssi=-55, seq=i)
    t.flush()
    (v,) = out
    schema.validate(schema.dumps(v), "visit")
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
    assert out[0]["id"] == schema.visit_id("site1", "s1", "d1", 0)
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
    assert [freq_to_channel(f) for f in (2412, 2437, 2462, 2484, 5180, None)] == [1, 6, 11, 14, 36, 0]
