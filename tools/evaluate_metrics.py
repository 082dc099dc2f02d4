"""``footfall evaluate --metrics``: every dashboard figure against the simulator's ground truth.

A simulated store day goes through the real pipeline: each sensor's pcap through the edge
agent (parser, keyed identity, visit tracker), its visit and presence messages through the
hub's ingest code (``hub/ingest.py`` Writer, in the order the agents sent them), device
linking (``hub/link.py``), the summaries, and finally the dashboard's own API
(``hub/api.py``, through an HTTP test client). MQTT transport is left out: it moves bytes and
cannot change a figure (``tests/test_hub_e2e.py`` runs the same path through Mosquitto).

Truth is over ALL simulated people (Wi-Fi off, never heard, far pavement included), per local
day:

* visitors, passers-by: people of that kind that day;
* capture rate: visitors / (visitors + passers-by);
* median and mean visitor dwell: time inside (enter to exit);
* return rate: share of the day's visitors who came on an earlier simulated day;
* occupancy: visitors inside, averaged over each 10-minute window.

Beside each estimate the *naive* figure is printed: what counting MAC addresses gives
(distinct MAC hashes the agents classed visitor / passer-by; their ratio; the agents' visitor
dwell; distinct MACs seen on an earlier day).

Seeds: :data:`TUNING_SEEDS` were used to choose settings; :data:`HELD_OUT_SEEDS` never were.
:func:`scenario` spreads seeds over store sizes, randomization shares, sensor counts and
numbers of days, deterministically.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from footfall.tools.evaluate import EVAL_KEY, read_pcap

TUNING_SEEDS = tuple(range(1, 11))
HELD_OUT_SEEDS = tuple(range(11, 31))
DATE = "2026-11-02"
OCCUPANCY_WINDOW_S = 600


@dataclass(frozen=True)
class Scenario:
    seed: int
    scale: float = 1.0
    randomized_share: float = 0.8
    sensors: int = 2
    days: int = 1

    @property
    def name(self) -> str:
        return (
            f"seed {self.seed}, scale {self.scale:g}, {self.randomized_share:.0%} randomized, "
            f"{self.sensors} sensor{'s' if self.sensors > 1 else ''}, {self.days} day{'s' if self.days > 1 else ''}"
        )


def scenario(seed: int) -> Scenario:
    """The scenario a seed stands for. Every level of every factor (store size, share of phones
    that randomize, number of sensors) appears among the tuning seeds and among the held-out
    seeds, in other combinations; every fourth seed simulates three days (history for the
    return rate, and a site model fitted on earlier days)."""
    return Scenario(
        seed=seed,
        scale=(0.5, 1.0, 1.5)[seed % 3],
        randomized_share=(0.6, 0.8, 0.95)[(seed // 3) % 3],
        sensors=1 + (seed + seed // 9) % 3,
        days=3 if seed % 4 == 0 else 1,
    )


# ----------------------------------------------------------------------------- the pipeline
@dataclass
class Message:
    sent: float  # capture time at which the agent sent it
    topic: str
    payload: bytes


@dataclass
class SimRun:
    scenario: Scenario
    directory: Path
    truth: dict[str, Any]
    messages: list[Message]
    visits: list[dict[str, Any]]  # every visit payload, all sensors


def run_agents(directory: Path, truth: dict[str, Any], site: str = "demo") -> tuple[list[Message], list[dict]]:
    """Every sensor's pcap through its own agent (one hash key); messages in sending order."""
    import os

    from footfall import schema
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    messages: list[Message] = []
    visits: list[dict[str, Any]] = []
    old = os.environ.get("FOOTFALL_HASH_KEY")
    os.environ["FOOTFALL_HASH_KEY"] = EVAL_KEY.hex()
    try:
        for s in truth["sensors"]:
            sensor = s["id"]
            holder: list[Agent] = []

            def sink(kind: str, payload: dict[str, Any], sensor: str = sensor, holder: list = holder) -> None:
                if kind not in ("visit", "presence"):
                    return
                sent = holder[0].tracker.now if holder else 0.0
                messages.append(Message(sent, f"footfall/{site}/{sensor}/{kind}", schema.dumps(payload)))
                if kind == "visit":
                    visits.append(payload)

            agent = Agent(AgentConfig(site=site, sensor=sensor), sink)
            holder.append(agent)
            agent.process(read_pcap(directory / f"{sensor}.pcap"))
            agent.finish("end_of_capture")
    finally:
        if old is None:
            os.environ.pop("FOOTFALL_HASH_KEY", None)
        else:
            os.environ["FOOTFALL_HASH_KEY"] = old
    messages.sort(key=lambda m: m.sent)
    return messages, visits


def simulate(sc: Scenario, workdir: Path) -> SimRun:
    from footfall.tools.simulator import simulate_day

    directory = workdir / f"sim-{sc.seed}"
    truth = simulate_day(
        directory,
        seed=sc.seed,
        sensors=sc.sensors,
        date=DATE,
        scale=sc.scale,
        randomized_share=sc.randomized_share,
        days=sc.days,
        site="demo",
        tz="UTC",
    )
    messages, visits = run_agents(directory, truth)
    return SimRun(sc, directory, truth, messages, visits)


def hub_config(run: SimRun, db: Path):
    from footfall.hub.config import HubConfig

    # The store's opening hours, as its hub.toml would say them.
    cfg = HubConfig(site="demo", timezone="UTC", db=str(db), link_every_s=0, hours="10-21")
    cfg.retention.raw_days = 100_000  # simulated dates may be far from today's clock
    return cfg


def ingest(run: SimRun, db: Path, *, until: float | None = None, start: int = 0, writer=None):
    """Feed the run's messages (from index ``start``, sent before ``until``) to the hub writer.

    Returns (writer, index of the next message)."""
    from footfall.hub import store
    from footfall.hub.ingest import Incoming, Writer

    if writer is None:
        writer = Writer(store.connect(db), hub_config(run, db))
    batch: list[Incoming] = []
    i = start
    while i < len(run.messages) and (until is None or run.messages[i].sent < until):
        m = run.messages[i]
        batch.append(Incoming(m.topic, m.payload))
        if len(batch) >= 2000:
            writer.write(batch)
            batch = []
        i += 1
    if batch:
        writer.write(batch)
    return writer, i


def api_client(db: Path, clock: float, tz: str = "UTC"):
    from fastapi.testclient import TestClient

    from footfall.hub import auth, store
    from footfall.hub.api import WebSettings, create_app

    conn = store.connect(db)
    key = auth.create_api_key(conn, f"evaluate-{clock}")
    conn.close()
    client = TestClient(create_app(db, WebSettings(tz=tz, clock=lambda: clock, refresh_interval_s=0)))
    client.headers["X-API-Key"] = key
    return client


# ----------------------------------------------------------------------------- figures
FIGURES = ("visitors", "passersby", "capture_rate", "median_dwell_s", "mean_dwell_s", "return_rate")
# Bounds of the issue: relative error for counts and dwell, absolute points for the return rate.
BOUNDS = {
    "visitors": ("rel", 0.10),
    "passersby": ("rel", 0.10),
    "capture_rate": ("rel", 0.10),
    "median_dwell_s": ("rel", 0.10),
    "mean_dwell_s": ("rel", 0.10),
    "return_rate": ("abs", 0.05),
}


@dataclass
class Figure:
    truth: float | None
    estimate: float | None
    low: float | None = None
    high: float | None = None
    heard: float | None = None  # what the hub heard (devices), before any correction
    naive: float | None = None  # distinct MACs (the dumbest rule)

    def error(self, kind: str = "rel") -> float | None:
        if self.truth is None or self.estimate is None:
            return None
        if kind == "abs":
            return self.estimate - self.truth
        return (self.estimate - self.truth) / self.truth if self.truth else None

    def naive_error(self, kind: str = "rel") -> float | None:
        if self.truth is None or self.naive is None:
            return None
        if kind == "abs":
            return self.naive - self.truth
        return (self.naive - self.truth) / self.truth if self.truth else None

    @property
    def covered(self) -> bool | None:
        if self.truth is None or self.low is None or self.high is None:
            return None
        return self.low <= self.truth <= self.high


def truth_figures(truth: dict[str, Any], day_index: int) -> dict[str, float | None]:
    people = [p for p in truth["people"] if p["day"] == day_index]
    visitors = [p for p in people if p["kind"] == "visitor"]
    passersby = [p for p in people if p["kind"] == "passerby"]
    dwell = [p["dwell_s"] for p in visitors]
    out: dict[str, float | None] = {
        "visitors": len(visitors),
        "passersby": len(passersby),
        "capture_rate": len(visitors) / (len(visitors) + len(passersby)) if people else None,
        "median_dwell_s": statistics.median(dwell) if dwell else None,
        "mean_dwell_s": statistics.mean(dwell) if dwell else None,
        "return_rate": (sum(1 for p in visitors if p["returning"]) / len(visitors)) if day_index and visitors else None,
    }
    return out


def truth_occupancy(truth: dict[str, Any], day_index: int, window_s: int = OCCUPANCY_WINDOW_S) -> dict[int, float]:
    """Visitors inside, time-averaged per window (UTC window start -> people)."""
    day = truth["days"][day_index]
    lo, hi = day["capture"]
    start = int(lo // window_s * window_s)
    out = {t: 0.0 for t in range(start, int(hi) + 1, window_s)}
    for p in truth["people"]:
        if p["day"] != day_index or p["kind"] != "visitor" or not p["inside"]:
            continue
        a, b = p["inside"]
        t = int(a // window_s * window_s)
        while t < b:
            overlap = min(b, t + window_s) - max(a, t)
            if overlap > 0 and t in out:
                out[t] += overlap / window_s
            t += window_s
    return out


def naive_figures(visits: Iterable[dict[str, Any]], day_start: float, day_end: float, before: set[str]) -> dict:
    """Counting MAC hashes: what a system without linking or correction would show."""
    vis: set[str] = set()
    seen: set[str] = set()
    dwell: list[float] = []
    for v in visits:
        if not day_start <= v["first_seen"] < day_end or v.get("long_stay"):
            continue
        seen.add(v["device"])
        if v["class"] == "visitor":
            vis.add(v["device"])
            dwell.append(v["dwell_s"])
    pb = seen - vis
    return {
        "visitors": len(vis),
        "passersby": len(pb),
        "capture_rate": len(vis) / len(seen) if seen else None,
        "median_dwell_s": statistics.median(dwell) if dwell else None,
        "mean_dwell_s": statistics.mean(dwell) if dwell else None,
        "return_rate": (len(vis & before) / len(vis)) if vis and before else None,
    }


def _num(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def api_figures(client, day: str) -> dict[str, dict[str, float | None]]:
    """Each figure as the dashboard API serves it: estimate, range and heard count when given."""

    def get(path: str) -> dict[str, Any]:
        r = client.get(path, params={"start": day, "end": day, "granularity": "day"})
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
        return r.json()

    totals = get("/api/footfall")["totals"]
    eng = get("/api/engagement")
    loy = get("/api/loyalty")
    sources = {
        "visitors": totals,
        "passersby": totals,
        "capture_rate": totals,
        "median_dwell_s": eng,
        "mean_dwell_s": eng,
        "return_rate": loy,
    }
    out = {}
    for name, src in sources.items():
        out[name] = {
            "estimate": _num(src, name),
            "low": _num(src, f"{name}_low"),
            "high": _num(src, f"{name}_high"),
            "heard": _num(src, f"{name}_heard"),
        }
    return out


@dataclass
class DayResult:
    scenario: Scenario
    day: str
    held_out: bool
    figures: dict[str, Figure] = field(default_factory=dict)
    occupancy: dict[str, float] = field(default_factory=dict)


def evaluate_run(run: SimRun, workdir: Path) -> list[DayResult]:
    """Ingest the whole run, link, and read every day's figures off the API."""
    from footfall.hub import link, summaries

    db = workdir / f"hub-{run.scenario.seed}.db"
    if db.exists():
        db.unlink()
    writer, _ = ingest(run, db)
    conn = writer.conn
    link.relink(conn, writer.config, since=0)
    summaries.rebuild_summaries(conn)
    results = []
    before: set[str] = set()
    for i, d in enumerate(run.truth["days"]):
        day_start = datetime.fromisoformat(d["date"]).replace(tzinfo=UTC).timestamp()
        day_end = day_start + 86400
        clock = day_end - 60
        client = api_client(db, clock)
        served = api_figures(client, d["date"])
        truth = truth_figures(run.truth, i)
        naive = naive_figures(run.visits, day_start, day_end, before)
        res = DayResult(run.scenario, d["date"], run.scenario.seed in HELD_OUT_SEEDS)
        for name in FIGURES:
            s = served[name]
            res.figures[name] = Figure(truth[name], s["estimate"], s["low"], s["high"], s["heard"], naive[name])
        res.occupancy = occupancy_scores(conn, run, i)
        results.append(res)
        before |= {
            v["device"] for v in run.visits if day_start <= v["first_seen"] < day_end and v["class"] == "visitor"
        }
    conn.close()
    return results


def occupancy_scores(conn, run: SimRun, day_index: int) -> dict[str, float]:
    """MAE (all windows, occupied windows) and Pearson of people present per window against the
    truth: the hub's estimate and the naive counts of the same windows (distinct MACs heard;
    distinct MACs heard at or above the agents' inside threshold)."""
    from footfall.edge_agent.visits import VisitSettings
    from footfall.hub import figures

    truth = truth_occupancy(run.truth, day_index)
    keys = sorted(truth)
    lo, hi = keys[0], keys[-1] + OCCUPANCY_WINDOW_S
    est = {r["start"]: r["people"] or 0.0 for r in figures.occupancy(conn, lo, hi, OCCUPANCY_WINDOW_S)}
    macs: dict[int, set[str]] = {k: set() for k in keys}
    strong: dict[int, set[str]] = {k: set() for k in keys}
    threshold = VisitSettings().inside_rssi
    for v in run.visits:
        w = int(v["first_seen"] // OCCUPANCY_WINDOW_S * OCCUPANCY_WINDOW_S)
        while w <= v["last_seen"]:
            if w in macs:
                macs[w].add(v["device"])
                if (v["rssi_max"] if v["rssi_max"] is not None else -999) >= threshold:
                    strong[w].add(v["device"])
            w += OCCUPANCY_WINDOW_S
    out = _occupancy_errors(keys, truth, est)
    for name, counts in (("macs", macs), ("strong_macs", strong)):
        for k, v in _occupancy_errors(keys, truth, {w: float(len(x)) for w, x in counts.items()}).items():
            out[f"{name}_{k}"] = v
    return out


def _occupancy_errors(keys: list[int], truth: dict[int, float], est: dict[int, float]) -> dict[str, float]:
    t = [truth[k] for k in keys]
    e = [float(est.get(k, 0.0)) for k in keys]
    occupied = [i for i, x in enumerate(t) if x >= 0.5]
    out = {"mae": sum(abs(a - b) for a, b in zip(t, e, strict=True)) / len(keys) if keys else math.nan}
    out["mae_occupied"] = sum(abs(t[i] - e[i]) for i in occupied) / len(occupied) if occupied else math.nan
    out["pearson"] = _pearson(t, e)
    return out


def _pearson(a: list[float], b: list[float]) -> float:
    if len(a) < 2:
        return math.nan
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    sa = math.sqrt(sum((x - ma) ** 2 for x in a))
    sb = math.sqrt(sum((x - mb) ** 2 for x in b))
    if not sa or not sb:
        return math.nan
    return sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / (sa * sb)


# ----------------------------------------------------------------------------- reporting
def _fmt(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    if name in ("capture_rate", "return_rate"):
        return f"{100 * v:.1f}%"
    if name.endswith("dwell_s"):
        return f"{v / 60:.1f}m"
    return f"{v:.0f}"


def _err(name: str, e: float | None) -> str:
    if e is None:
        return "-"
    if BOUNDS[name][0] == "abs":
        return f"{100 * e:+.1f}pt"
    return f"{100 * e:+.1f}%"


def format_day(r: DayResult) -> str:
    lines = [f"{r.scenario.name} -- {r.day} ({'held out' if r.held_out else 'tuning'})"]
    lines.append(
        f"  {'figure':15} {'truth':>8} {'estimate':>9} {'range':>17} {'error':>8} {'heard':>7} {'naive':>8}"
        f" {'naive err':>9}"
    )
    for name, f in r.figures.items():
        kind = BOUNDS[name][0]
        heard_as = "visitors" if name == "return_rate" else name  # heard: the visitors followed
        rng = f"{_fmt(name, f.low)}-{_fmt(name, f.high)}" if f.low is not None else "-"
        lines.append(
            f"  {name:15} {_fmt(name, f.truth):>8} {_fmt(name, f.estimate):>9} {rng:>17} "
            f"{_err(name, f.error(kind)):>8} {_fmt(heard_as, f.heard):>7} {_fmt(name, f.naive):>8} "
            f"{_err(name, f.naive_error(kind)):>9}"
        )
    if r.occupancy:
        o = r.occupancy
        lines.append(
            f"  occupancy per {OCCUPANCY_WINDOW_S // 60} min: MAE {o['mae']:.2f}, occupied {o['mae_occupied']:.2f},"
            f" Pearson {o['pearson']:.3f} | distinct MACs {o['macs_mae']:.1f} / {o['macs_mae_occupied']:.1f} /"
            f" {o['macs_pearson']:.3f} | MACs >= inside RSSI {o['strong_macs_mae']:.1f} /"
            f" {o['strong_macs_mae_occupied']:.1f} / {o['strong_macs_pearson']:.3f}"
        )
    return "\n".join(lines)


def summarize(results: list[DayResult]) -> str:
    """Per figure over the days given: mean |error|, worst |error|, days within bound, coverage."""
    lines = [
        f"{'figure':15} {'days':>4} {'mean |err|':>10} {'worst':>8} {'in bound':>8} {'range covers':>12}"
        f" {'naive mean |err|':>16}"
    ]
    for name in FIGURES:
        kind, bound = BOUNDS[name]
        errs = [r.figures[name].error(kind) for r in results if r.figures[name].error(kind) is not None]
        nerrs = [r.figures[name].naive_error(kind) for r in results if r.figures[name].naive_error(kind) is not None]
        cov = [r.figures[name].covered for r in results if r.figures[name].covered is not None]
        if not errs:
            continue
        unit = "pt" if kind == "abs" else "%"
        lines.append(
            f"{name:15} {len(errs):4d} {100 * statistics.fmean(abs(e) for e in errs):9.1f}{unit} "
            f"{100 * max(abs(e) for e in errs):7.1f}{unit} {sum(abs(e) <= bound for e in errs):4d}/{len(errs):<3d} "
            f"{(f'{sum(cov)}/{len(cov)}' if cov else '-'):>12} "
            f"{(f'{100 * statistics.fmean(abs(e) for e in nerrs):15.1f}{unit}' if nerrs else '-'):>16}"
        )
    return "\n".join(lines)


def evaluate_seeds(
    seeds: Iterable[int], workdir: Path | None = None, progress: Callable[[str], None] | None = None
) -> list[DayResult]:
    results: list[DayResult] = []
    with tempfile.TemporaryDirectory(prefix="footfall-eval-") as tmp:
        base = Path(workdir or tmp)
        for seed in seeds:
            sc = scenario(seed)
            run = simulate(sc, base)
            days = evaluate_run(run, base)
            results += days
            if progress:
                for d in days:
                    progress(format_day(d))
    return results


def results_json(results: list[DayResult]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        out.append(
            {
                "scenario": asdict(r.scenario),
                "day": r.day,
                "held_out": r.held_out,
                "figures": {k: asdict(v) for k, v in r.figures.items()},
                "occupancy": r.occupancy,
            }
        )
    return out


def parse_seeds(text: str) -> list[int]:
    """``held-out``, ``tuning``, ``all``, or a list like ``1,2,11-15``."""
    if text == "held-out":
        return list(HELD_OUT_SEEDS)
    if text == "tuning":
        return list(TUNING_SEEDS)
    if text == "all":
        return list(TUNING_SEEDS + HELD_OUT_SEEDS)
    seeds: list[int] = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        seeds += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return seeds


def cmd_metrics(seeds_text: str, as_json: bool, workdir: str | None) -> int:
    seeds = parse_seeds(seeds_text)
    printer = None if as_json else print
    results = evaluate_seeds(seeds, Path(workdir) if workdir else None, printer)
    if as_json:
        print(json.dumps(results_json(results), indent=1))
        return 0
    for label, held in (("tuning seeds", False), ("held-out seeds", True)):
        subset = [r for r in results if r.held_out == held]
        if subset:
            print(f"\n== {label} ({len(subset)} days) ==")
            print(summarize(subset))
    return 0


# ----------------------------------------------------------------------------- live figures
@dataclass
class LiveResult:
    scenario: Scenario
    day: str
    steps: int
    max_passersby_revision: float  # relative change of what the previous run had counted, by the next run
    max_visitors_revision: float
    max_capture_revision_pts: float
    backward_moves: int  # times today's passers-by or visitors total went down
    rows: list[dict[str, Any]] = field(default_factory=list)
    backward: list[str] = field(default_factory=list)


def evaluate_live(sc: Scenario, workdir: Path, step_s: float = 900.0) -> LiveResult:
    """Replay the last simulated day as it happens: every ``step_s`` the messages the agents sent
    by then reach the hub and the link job runs (``now`` = the simulated clock), as in a store.
    Measured: how much each run revises the hours that were already settled in the run before
    (the figures a manager has already read), and whether today's totals ever go down."""
    from footfall.hub import figures, link
    from footfall.hub.estimate import estimate

    run = simulate(sc, workdir)
    db = workdir / f"hub-live-{sc.seed}.db"
    if db.exists():
        db.unlink()
    last = run.truth["days"][-1]
    day = date.fromisoformat(last["date"])
    lo, hi = last["capture"]
    writer, i = ingest(run, db, until=lo)
    conn = writer.conn
    cfg = writer.config
    link.relink(conn, cfg, since=0, now=lo)
    day_start = datetime.combine(day, datetime.min.time(), UTC).timestamp()
    prev: dict[str, Any] | None = None
    res = LiveResult(sc, last["date"], 0, 0.0, 0.0, 0.0, 0)
    t = lo + step_s
    day_end = day_start + 86400
    while t <= hi + cfg.settle_s + step_s:
        writer, i = ingest(run, db, until=t, start=i, writer=writer)
        result = link.relink(conn, cfg, since=day_start, now=t)
        totals = figures.period_totals(conn, day, day) or {}
        if prev is not None and result.analysis is not None:
            # What this run says about the visits the previous run had already counted.
            an = result.analysis
            again = estimate(an.sessions, an.model, [("day", day_start, day_end)], final_before=prev["watermark"])[
                "day"
            ]
            for name, attr in (("passersby", "max_passersby_revision"), ("visitors", "max_visitors_revision")):
                before = prev["totals"].get(name) or 0.0
                now_ = getattr(again, name).estimate or 0.0
                # Relative to at least 10 people: early in the day 0.1 -> 0.2 is not "+100 %".
                setattr(res, attr, max(getattr(res, attr), abs(now_ - before) / max(before, 10.0)))
            cap_before, cap_now = prev["totals"].get("capture_rate"), again.capture_rate.estimate
            if cap_before is not None and cap_now is not None:
                res.max_capture_revision_pts = max(res.max_capture_revision_pts, abs(cap_now - cap_before) * 100)
            for name in ("visitors", "passersby"):
                if (totals.get(name) or 0.0) < (prev["totals"].get(name) or 0.0) - 1e-6:
                    res.backward_moves += 1
                    res.backward.append(
                        f"{name} {prev['totals'].get(name)} -> {totals.get(name)} at "
                        f"{datetime.fromtimestamp(t, UTC).strftime('%H:%M')}"
                    )
        res.rows.append(
            {
                "clock": datetime.fromtimestamp(t, UTC).strftime("%H:%M"),
                "visitors": totals.get("visitors"),
                "passersby": totals.get("passersby"),
                "capture_rate": totals.get("capture_rate"),
            }
        )
        prev = {"watermark": t - cfg.settle_s, "totals": totals}
        t += step_s
    res.steps = len(res.rows)
    conn.close()
    return res


def cmd_live(seeds_text: str, workdir: str | None) -> int:
    seeds = parse_seeds(seeds_text)
    with tempfile.TemporaryDirectory(prefix="footfall-live-") as tmp:
        base = Path(workdir or tmp)
        for seed in seeds:
            sc = scenario(seed)
            if sc.days < 2:  # a store with history: its day's model is fitted on earlier days
                sc = Scenario(sc.seed, sc.scale, sc.randomized_share, sc.sensors, 2)
            r = evaluate_live(sc, base)
            print(f"{sc.name} -- live replay of {r.day}, the link job every 15 min ({r.steps} runs)")
            for row in r.rows:
                cap = row["capture_rate"]
                print(
                    f"  {row['clock']}  visitors {row['visitors'] or 0:7.1f}  passers-by {row['passersby'] or 0:7.1f}"
                    f"  capture {'-' if cap is None else f'{100 * cap:.1f}%'}"
                )
            print(
                f"  largest revision of settled hours: passers-by {100 * r.max_passersby_revision:.2f} %, visitors "
                f"{100 * r.max_visitors_revision:.2f} %, capture rate {r.max_capture_revision_pts:.2f} points; "
                f"today's totals went down {r.backward_moves} times"
                + (f" ({'; '.join(r.backward)})" if r.backward else "")
            )
    return 0
