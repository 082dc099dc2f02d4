"""Device linking speed: the visits of 1 million probe requests, linker against the naive count.

Setup (timed, not part of the target): ``make_frames`` from the simulator produces N frames
(default 1,000,000) from ``--devices`` concurrent phones of the simulator's model mix (80 %
randomized: per-scan and interval MAC rotation), and the real agent (parser, keyed identity,
visit tracker) turns them into visit payloads, which is what the hub links. Then, in one
process, on the same visits:

- naive: ``HashEstimator``'s work: device key = device hash, plus its per-fingerprint bounds
  (``randomized_bounds``: concurrency and chain cover) for one unique-device count;
- linker: ``derandomize.link_with_stats`` (every visit keyed to a device) plus
  ``estimate_unique`` over the whole range, i.e. what the hub pays for linking and counting;
- hub job: ``analysis.analyse``, what the link job runs on a day (site model fit, the
  estimation and identity passes of the tracker, stays), printed against the linker alone.

Target: linking 1 million frames' worth of visits in under 60 s. Prints CPU and wall seconds
and the linker/naive ratio (CPU seconds: the machine is shared). Usage::

    .venv/bin/python -m footfall.tools.bench.bench_link [--frames 1000000] [--devices 5000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

from footfall.hub.derandomize import link_with_stats
from footfall.hub.devices import randomized_bounds
from footfall.hub.linked_devices import estimate_unique
from footfall.tools.evaluate import run_agent

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def naive(visits: list[dict[str, Any]]) -> tuple[dict[str, str], tuple[int, int, int]]:
    keys = {v["id"]: v["device"] for v in visits}
    rows = sorted(
        ((v["device"], v["first_seen"], v["last_seen"], v["fingerprint"]) for v in visits if v["randomized"]),
        key=lambda r: r[1],
    )
    return keys, randomized_bounds(rows, 600.0)


def linker(visits: list[dict[str, Any]]) -> tuple[dict[str, str], Any]:
    keys, stats = link_with_stats(visits)
    est = estimate_unique(visits, float("-inf"), float("inf"), keys=keys, stats=stats)
    return keys, (stats, est)


def hub_job(visits: list[dict[str, Any]]) -> Any:
    """What the hub's link job pays on top of linking: the site model fitted on the visits
    (a first tracker pass), the estimation pass and the identity pass, and the stays."""
    from footfall.hub.analysis import analyse

    return analyse(visits, is_open=lambda t: True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=5_000, help="concurrent phones in range")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    from footfall.tools.simulator import make_frames

    frames, w_gen, _ = timed(lambda: list(make_frames(args.frames, seed=args.seed, devices=args.devices)))
    span = frames[-1][0] - frames[0][0]
    (visits, _agent), w_agent, _ = timed(lambda: run_agent(frames))
    frames.clear()  # the frames are not needed for linking: give the memory back
    macs = len({v["device"] for v in visits})
    print(
        f"setup: {args.frames} frames from {args.devices} phones over {span:.0f} s ({w_gen:.1f} s), "
        f"agent -> {len(visits)} visits of {macs} MACs ({w_agent:.1f} s)"
    )
    (_, bounds), w_naive, c_naive = timed(lambda: naive(visits))
    (keys, (stats, est)), w_link, c_link = timed(lambda: linker(visits))
    devices = len(set(keys.values()))
    print(f"naive : {w_naive:7.2f} s wall {c_naive:7.2f} s CPU   devices {macs} (bounds low/count/high {bounds})")
    print(
        f"linker: {w_link:7.2f} s wall {c_link:7.2f} s CPU   devices {devices} "
        f"(estimate {est.count}, low {est.low}, high {est.high}, confidence {est.confidence}; "
        f"{stats.links} links, {stats.seq_links} by sequence number, {stats.ambiguous} ambiguous)"
    )
    an, w_job, c_job = timed(lambda: hub_job(visits))
    print(
        f"hub job: {w_job:6.2f} s wall {c_job:7.2f} s CPU   (model fit, estimation and identity passes, "
        f"{len(an.sessions)} stays; {c_job / max(c_link, 1e-9):.1f}x the linker alone)"
    )
    ratio = c_link / c_naive if c_naive > 0 else float("inf")
    verdict = "OK" if w_link < 60.0 else "OVER TARGET"
    print(
        f"ratio linker/naive: {ratio:.1f}x CPU ({w_link / max(w_naive, 1e-9):.1f}x wall); "
        f"{args.frames / max(w_link, 1e-9):,.0f} frames/s linked; target < 60 s for 1M frames: {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
