"""How well the device estimator counts people, against ground truth (``footfall evaluate``
without ``--metrics``; its command line is ``tools/evaluate_cli.py``).

Two sources of truth:

* the real labelled captures (``../shared/data/probe-captures``): one phone per file, eleven
  files merged into one stream. The frames go through the real agent path (parser, keyed
  identity, visit tracker) and its visits through the linker, exactly what the hub would get.
  The truth label of a visit is the file its MAC came from. Two clocks are evaluated:

  - ``recorded``: timestamps as captured. The recordings were made on different days (some
    on the same afternoon), so phones that were never together stay apart in time; the
    linker still has to join hundreds of per-scan MACs per phone across silences of minutes.
  - ``aligned``: every file shifted to start at the same instant, as if the eleven phones
    had walked into one shop together: the hard case (four iPhone 11 and one iPhone 12 on
    iOS 16.4 share one fingerprint and draw a random sequence number per scan).

  The anonymization of that data set re-wrote MACs without preserving the locally
  administered bit (half of the per-scan MACs of the iPhones show up "global"), so the
  linker runs with ``trust_la_bit=False`` there; the data set states most MACs are randomized.

* a simulator output directory (``footfall simulate``): per-sensor pcaps and
  ``groundtruth.json`` mapping people to the MACs their phones used.

Scores: estimated devices vs true devices, the naive distinct-MAC count, and clustering
quality of visits (homogeneity, completeness, V-measure, adjusted Rand index; scikit-learn),
for the linker next to the naive baseline (every MAC its own device).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from footfall.hub.derandomize import LinkSettings, link_with_stats

# Evaluation only: a fixed hash key makes runs repeatable (ties in time are broken by device
# hash). Ground-truth data is not private; a deployment's key is its own secret.
EVAL_KEY = hashlib.sha256(b"footfall evaluate").digest()
DEFAULT_CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "probe-captures"


def read_pcap(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) of a classic pcap; the agent's PcapSource when it is available."""
    try:
        from footfall.edge_agent.pcapfile import PcapSource  # type: ignore[import-not-found]
    except ImportError:
        PcapSource = None  # noqa: N806
    if PcapSource is not None:
        yield from PcapSource(path)
        return
    data = Path(path).read_bytes()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian, nano = "<", magic == b"\x4d\x3c\xb2\xa1"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian, nano = ">", magic == b"\xa1\xb2\x3c\x4d"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    rec = struct.Struct(endian + "IIII")
    div = 1e9 if nano else 1e6
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, off)
        off += 16
        yield sec + frac / div, data[off : off + incl]
        off += incl


@dataclass
class Scores:
    true_devices: int
    naive_count: int
    estimated: int
    low: int
    high: int
    confidence: float
    visits: int
    naive: dict[str, float] = field(default_factory=dict)
    linker: dict[str, float] = field(default_factory=dict)
    # The dumbest rules that could pass for linking: one device until 300 s of silence, over
    # the whole stream and per fingerprint. The linker must beat them on the case that tests it.
    silence: dict[str, float] = field(default_factory=dict)
    silence_fp: dict[str, float] = field(default_factory=dict)
    link_stats: dict[str, int] = field(default_factory=dict)
    # Unique visitors (people who came in), when the truth says who did: the people of kind
    # "visitor" heard by a sensor; estimated: device keys with a visitor session after linking;
    # naive: distinct MACs with a visit the agent classed "visitor".
    true_visitors: int | None = None
    est_visitors: int | None = None
    naive_visitors: int | None = None

    @property
    def visitor_error_pct(self) -> float | None:
        if self.true_visitors is None or self.est_visitors is None:
            return None
        return 100.0 * (self.est_visitors - self.true_visitors) / max(self.true_visitors, 1)

    @property
    def count_error(self) -> int:
        return self.estimated - self.true_devices

    @property
    def count_error_pct(self) -> float:
        return 100.0 * self.count_error / max(self.true_devices, 1)


def cluster_scores(truth: list[str], pred: list[str]) -> dict[str, float]:
    from sklearn import metrics

    h, c, v = metrics.homogeneity_completeness_v_measure(truth, pred)
    return {
        "homogeneity": round(float(h), 4),
        "completeness": round(float(c), 4),
        "v_measure": round(float(v), 4),
        "ari": round(float(metrics.adjusted_rand_score(truth, pred)), 4),
    }


SILENCE_GAP_S = 300.0


def silence_keys(
    visits: Iterable[dict[str, Any]], gap_s: float = SILENCE_GAP_S, per_fingerprint: bool = False
) -> dict[str, str]:
    """Baseline: a new device after ``gap_s`` of silence (per fingerprint, or in the whole stream)."""
    keys: dict[str, str] = {}
    current: dict[str, str] = {}
    end: dict[str, float] = {}
    for v in sorted(visits, key=lambda v: v["first_seen"]):
        group = v.get("fingerprint") or "" if per_fingerprint else ""
        if group not in current or v["first_seen"] - end[group] > gap_s:
            current[group] = v["device"]
            end[group] = v["last_seen"]
        end[group] = max(end[group], v["last_seen"])
        keys[v["id"]] = current[group]
    return keys


def score_visits(
    visits: list[dict[str, Any]],
    truth_of_device: dict[str, str],
    settings: LinkSettings | None = None,
    visitors: set[str] | None = None,
    analysis: Any = None,
) -> Scores:
    """Link ``visits`` and score them against ``truth_of_device`` (device hash -> true device).

    With ``analysis`` (``footfall.hub.analysis.analyse`` of the same visits: what the hub
    does, with its inside model and stays) its keys are scored, and its visits counted."""
    from footfall.hub.linked_devices import device_sessions, estimate_unique

    settings = settings or LinkSettings()
    labelled = [v for v in visits if v["device"] in truth_of_device]
    if analysis is not None:
        keys, stats = analysis.keys, analysis.stats
    else:
        keys, stats = link_with_stats(labelled, settings)
    truth = [truth_of_device[v["device"]] for v in labelled]
    est = estimate_unique(labelled, float("-inf"), float("inf"), settings, keys=keys, stats=stats)
    scores = Scores(
        true_devices=len(set(truth)),
        naive_count=len({v["device"] for v in labelled}),
        estimated=est.count,
        low=est.low,
        high=est.high,
        confidence=stats.confidence,
        visits=len(labelled),
        naive=cluster_scores(truth, [v["device"] for v in labelled]),
        linker=cluster_scores(truth, [keys[v["id"]] for v in labelled]),
        link_stats=asdict(stats),
    )
    for name, per_fp in (("silence", False), ("silence_fp", True)):
        base = silence_keys(labelled, per_fingerprint=per_fp)
        setattr(
            scores,
            name,
            cluster_scores(truth, [base[v["id"]] for v in labelled]) | {"devices": len(set(base.values()))},
        )
    if visitors is not None:
        scores.true_visitors = len(visitors & set(truth))
        if analysis is not None:
            from footfall.hub.estimate import classify

            classify(analysis.sessions, analysis.model)
            scores.est_visitors = len({s.key for s in analysis.sessions if s.p_visit >= 0.5 and not s.staff})
        else:
            sessions = device_sessions(labelled, keys)
            staff = {s.device_key for s in sessions if s.long_stay}
            scores.est_visitors = len({s.device_key for s in sessions if s.visitor and s.device_key not in staff})
        scores.naive_visitors = len({v["device"] for v in labelled if v.get("class") == "visitor"})
    return scores


class _Collector:
    def __init__(self) -> None:
        self.visits: list[dict[str, Any]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "visit":
            self.visits.append(payload)


@contextmanager
def hash_key_env(key: bytes) -> Iterator[None]:
    """The agent's hash key in FOOTFALL_HASH_KEY while agents are made (the only ways an agent
    takes a key are that and a key file), the variable as it was afterwards."""
    old = os.environ.get("FOOTFALL_HASH_KEY")
    os.environ["FOOTFALL_HASH_KEY"] = key.hex()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FOOTFALL_HASH_KEY", None)
        else:
            os.environ["FOOTFALL_HASH_KEY"] = old


def run_agent(
    frames: Iterable[tuple[float, bytes]], *, site: str = "eval", sensor: str = "s1", key: bytes | None = None
) -> tuple[list[dict[str, Any]], Any]:
    """Frames (time order) through the real agent; returns (visit payloads, the agent)."""
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    sink = _Collector()
    with hash_key_env(key or secrets.token_bytes(32)):
        agent = Agent(AgentConfig(site=site, sensor=sensor), sink)
    agent.process(frames)
    agent.finish("end_of_capture")
    return sink.visits, agent


def _mac_hash(agent: Any, mac: bytes) -> str | None:
    """The device id the agent's payloads carry for this MAC (same key, same hash)."""
    ident = agent.identifier
    if hasattr(ident, "device_id"):
        return ident.device_id(mac)
    found = ident.identify(mac)
    return None if found is None else (found[0].hex() if isinstance(found[0], bytes) else found[0])


def load_captures(paths: list[Path], clock: str = "recorded") -> tuple[list[dict[str, Any]], dict[str, str], int]:
    """Merge labelled captures into one stream through the agent.

    Returns (visits, device hash -> file label, frames).
    """
    if clock not in ("recorded", "aligned"):
        raise ValueError("clock must be 'recorded' or 'aligned'")
    from footfall.edge_agent.parse import Parser

    parser = Parser()
    stream: list[tuple[float, bytes]] = []
    mac_labels: dict[bytes, Counter[str]] = defaultdict(Counter)
    for path in paths:
        label = Path(path).name.split("_")[0]
        frames = list(read_pcap(path))
        if not frames:
            continue
        shift = -frames[0][0] + 1_700_000_000.0 if clock == "aligned" else 0.0
        for ts, frame in frames:
            p = parser.parse(frame, ts)
            if p is None:
                continue
            mac_labels[p.sa][label] += 1
            stream.append((ts + shift, frame))
    stream.sort(key=lambda r: r[0])
    visits, agent = run_agent(stream, key=EVAL_KEY)
    truth = {}
    for mac, labels in mac_labels.items():
        h = _mac_hash(agent, mac)
        if h is not None:
            truth[h] = labels.most_common(1)[0][0]
    return visits, truth, len(stream)


def evaluate_captures(
    paths: list[Path] | None = None, clock: str = "recorded", settings: LinkSettings | None = None
) -> Scores:
    if paths is None:
        paths = sorted(DEFAULT_CAPTURES.glob("*.pcap"))
    if not paths:
        raise FileNotFoundError(f"no .pcap files in {DEFAULT_CAPTURES}")
    visits, truth, _ = load_captures(paths, clock)
    # By default as the identity pass, whose keys the store keeps (no inside model here).
    return score_visits(visits, truth, settings or LinkSettings(trust_la_bit=False).identity())


def load_simulation(directory: Path) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
    """Visits of a simulator run (every sensor's pcap through its own agent, one hash key).

    ``groundtruth.json`` (see ``footfall.tools.simulator``): ``people[].person`` and their
    ``macs[].mac``; a visit's truth is the person whose phone used that MAC.
    """
    directory = Path(directory)
    gt = json.loads((directory / "groundtruth.json").read_text())
    people = gt.get("people", gt if isinstance(gt, list) else [])
    mac_person: dict[bytes, str] = {}
    for person in people:
        # ``person`` is stable across days (returning customers); ``id`` is one appearance.
        pid = str(person.get("person", person.get("id")))
        for m in person.get("macs", []):
            mac = m.get("mac") if isinstance(m, dict) else m[0] if isinstance(m, list) else m
            mac_person[bytes.fromhex(str(mac).replace(":", "").replace("-", ""))] = pid
    key = EVAL_KEY
    visits: list[dict[str, Any]] = []
    agent = None
    pcaps = sorted(directory.glob("*.pcap"))
    if not pcaps:
        raise FileNotFoundError(f"no .pcap files in {directory}")
    for pcap in pcaps:
        sensor = pcap.stem.replace("_", "-")[:32] or "s1"
        vs, agent = run_agent(read_pcap(pcap), sensor=sensor, key=key)
        visits.extend(vs)
    truth = {}
    for mac, pid in mac_person.items():
        h = _mac_hash(agent, mac)
        if h is not None:
            truth[h] = pid
    return visits, truth, gt


def sim_visitors(gt: dict[str, Any]) -> set[str]:
    """People who came in (kind "visitor"), by stable person id."""
    return {str(p.get("person", p.get("id"))) for p in gt.get("people", []) if p.get("kind") == "visitor"}


def evaluate_simulation(directory: Path, settings: LinkSettings | None = None) -> Scores:
    """Score the hub's linking of a simulated store: its own steps (``hub/analysis.py``: the
    inside model and link model fitted on these visits, opening hours from the simulation)."""
    from footfall.hub.analysis import analyse

    visits, truth, gt = load_simulation(directory)
    windows = [(d["open"], d["close"]) for d in gt.get("days", [])]

    def is_open(t: float) -> bool:
        return any(a <= t <= b for a, b in windows) if windows else True

    labelled = [v for v in visits if v["device"] in truth]
    an = analyse(labelled, is_open=is_open, settings=settings)
    return score_visits(labelled, truth, settings, visitors=sim_visitors(gt), analysis=an)
