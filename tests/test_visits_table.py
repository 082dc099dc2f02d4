"""The tracker's table of open visits (edge_agent/device_table.py): an open-addressing hash
table of slot numbers keyed by the 16-octet device digests, a small dict of recent devices in front.

Its layout must never show in the output: the same sightings give the same payloads, in the
same order, whatever the keys hash to, whether devices come as digests or as str ids (which
get random keys of their own), and however full the table is.
"""

import builtins
import random
import tracemalloc

import pytest

from footfall.edge_agent import device_table, visit_columns
from footfall.edge_agent.visits import VisitSettings, VisitTracker


class Model:
    fingerprint = "0123456789abcdef"
    ie_ids = (0, 1, 50)


class OtherModel:
    fingerprint = "fedcba9876543210"
    ie_ids = (0, 1, 45, 127)


def sightings(seed: int, devices: int = 400, frames: int = 8_000, spread: float = 60, rate: float = 4) -> list[tuple]:
    """Churn: devices come and go (gap closes, evictions, expiry), some frames out of order,
    repeated sequence numbers, SSIDs, partner hashes, three channels."""
    rnd = random.Random(seed)
    digests = [rnd.randbytes(16) for _ in range(devices)]
    ssids = [f"{k:012x}" for k in range(40)]
    ts = 1_700_000_000.0
    out = []
    for _ in range(frames):
        ts += rnd.expovariate(rate)
        d = digests[min(int(rnd.expovariate(1 / spread)), devices - 1)]
        at = ts - rnd.random() * 2 if rnd.random() < 0.05 else ts  # a copy from another radio
        ident = (d, bool(d[0] & 2), f"ph{d[1]}" if d[1] < 8 else None)
        model = Model if d[2] & 1 else OtherModel
        ssid = rnd.choice(ssids) if rnd.random() < 0.4 else None
        rssi = rnd.choice((None, -45, -60, -75, -90))
        out.append(
            (
                at,
                ident,
                rssi,
                rnd.randrange(4096) if rnd.random() < 0.9 else None,
                model,
                1 << rnd.choice((1, 6, 11)),
                ssid,
            )
        )
    return out


def run(frames: list[tuple], *, as_str: bool = False, **settings) -> list[dict]:
    out: list[dict] = []
    t = VisitTracker("site1", "s1", out.append, VisitSettings(**settings))
    next_tick = 0.0
    for ts, ident, *rest in frames:
        if ts >= next_tick:
            t.tick(ts)
            next_tick = ts + 1.0
            out.append({"presence": t.presence(ts, 60.0)})
        if as_str:
            ident = (ident[0].hex(), *ident[1:])
        t.observe(ts, ident, *rest)
        if not len(out) % 97:  # now and then: the table holds exactly the open visits
            open_slots = [i for i, last in enumerate(t._last) if last == last]
            assert sorted(t._index.slots()) == open_slots
            assert len(t.open) == len(open_slots) == len(set(t.open))
    t.flush()
    assert len(t.open) == 0 and not t._index.slots()
    return out


SETTINGS = ({}, {"gap_s": 20.0, "burst_s": 0.3}, {"max_devices": 50, "gap_s": 120.0}, {"max_visit_s": 90.0})


def test_payloads_do_not_depend_on_the_table(monkeypatch):
    for k, settings in enumerate(SETTINGS):
        frames = sightings(k)
        want = run(frames, **settings)
        assert sum("device" in v for v in want) > 100
        # devices as str ids: each gets a random key, so a different table layout
        assert run(frames, as_str=True, **settings) == want
        # every key in one of four home positions: long clusters, shifts on every close
        monkeypatch.setattr(device_table, "hash", lambda key: key[0] & 3, raising=False)
        assert run(frames, **settings) == want
        monkeypatch.undo()
        # only the last device remembered in front of the table: every other frame looks its
        # visit up there, and every record goes back to the columns as the next one comes
        monkeypatch.setattr(visit_columns, "_HOT_MAX", 0)
        assert run(frames, **settings) == want
        monkeypatch.undo()


def test_payloads_do_not_depend_on_the_table_as_it_grows(monkeypatch):
    # thousands open at once: the table is rebuilt larger several times, then emptied by a flush
    frames = sightings(7, devices=6_000, frames=8_000, spread=3_000, rate=20)
    want = run(frames)
    assert sum(v.get("closed_by") == "shutdown" for v in want) > 2_500  # table of 8,192 at the end
    assert run(frames, as_str=True) == want
    monkeypatch.setattr(device_table, "hash", lambda key: builtins.hash(key) & ~15, raising=False)  # homes 16 apart
    assert run(frames) == want
    monkeypatch.undo()


def test_visits_close_in_the_order_they_opened():
    out: list[dict] = []
    t = VisitTracker("site1", "s1", out.append, VisitSettings(gap_s=100.0, max_devices=4))

    def see(ts: float, device: str) -> None:
        t.observe(ts, (device, True, None), -50, None, Model, 2, None)

    for ts, d in ((0.0, "a"), (1.0, "b"), (2.0, "c"), (90.0, "a"), (90.5, "c")):
        see(ts, d)
    see(120.0, "d")  # b expired just before (silent since 1 s): d opens in b's slot
    assert [(v["device"], v["closed_by"]) for v in out] == [("b", "gap")]
    assert list(t.open) == ["a", "c", "d"] and "d" in t.open and "b" not in t.open
    t.tick(300.0)  # all three expire at once: in the order they opened, not by slot
    assert [v["device"] for v in out[1:]] == ["a", "c", "d"]
    # past max_devices the visits heard longest ago go first; a tie in the order they opened
    for ts, d in ((400.0, "e"), (401.0, "f"), (401.0, "g"), (402.0, "h"), (402.5, "e"), (403.0, "i")):
        see(ts, d)
    assert [(v["device"], v["closed_by"]) for v in out[4:]] == [("f", "evicted")]
    see(404.0, "j")
    assert [(v["device"], v["closed_by"]) for v in out[5:]] == [("g", "evicted")]
    t.flush()
    assert [v["device"] for v in out[6:]] == ["e", "h", "i", "j"]
    assert len(t.open) == 0 and list(t.open) == []


def test_opening_numbers_wrap_without_reordering():
    out: list[dict] = []
    t = VisitTracker("site1", "s1", out.append)
    t._next_order = 2**32 - 2  # as after four billion visits
    for k in range(5):
        t.observe(100.0 + k, (bytes([k]) * 16, True, None), -50, None, Model, 2, None)
    t.flush()
    assert [v["device"] for v in out] == [(bytes([k]) * 16).hex() for k in range(5)]
    assert t._next_order == 5  # renumbered when the third opened: 0 and 1 for the two open then


def test_an_open_visit_costs_about_a_hundred_bytes():
    # 20,000 devices open at once: the table, the keys and the columns, no object per device
    # (the dict of digests to slot numbers it replaced cost 320 bytes a device, docs/agent.md).
    rnd = random.Random(1)
    idents = [(rnd.randbytes(16), True, None) for _ in range(20_000)]
    t = VisitTracker("site1", "s1", lambda p: None)
    t.observe(1.0, (b"\0" * 16, True, None), -50, 1, Model, 2, None)  # the lazily made parts
    tracemalloc.start()
    for k, ident in enumerate(idents):
        t.observe(2.0 + k * 1e-3, ident, -50, 1, Model, 2, None)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(t.open) == 20_001
    assert used / 20_000 < 140, used / 20_000


def test_a_failing_emit_leaves_the_table_whole():
    out: list[dict] = []

    def emit(payload: dict) -> None:
        if len(out) == 2:
            raise OSError("disk full")
        out.append(payload)

    t = VisitTracker("site1", "s1", emit)
    for k in range(6):
        t.observe(100.0 + k, (bytes([k]) * 16, True, None), -50, None, Model, 2, None)
    with pytest.raises(OSError):
        t.flush()  # a flush closes them all at once: the table is rebuilt after them
    t.emit = out.append  # the third visit was lost with its emit, as a dict lost it
    assert len(t.open) == 3 and list(t.open) == [bytes([k]) * 16 for k in (3, 4, 5)]
    t.observe(200.0, (bytes([4]) * 16, True, None), -50, None, Model, 2, None)  # still open: found
    assert len(t.open) == 3
    t.flush()
    assert [v["device"] for v in out] == [(bytes([k]) * 16).hex() for k in (0, 1, 3, 4, 5)]
