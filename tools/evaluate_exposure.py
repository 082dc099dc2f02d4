"""How well ``footfall o2o exposure report`` finds the lift of a campaign, on synthetic
dealerships whose truth is known (issue 14 item 5; docs/o2o.md, "Attribution of ad exposure").

A world: 4,000 phones with a real (global) MAC, each with a latent habit (loyal 15 %: a visit a
week; occasional 35 %: one a month; passer-by 50 %: mostly heard walking past) over 90 days
before and 35 days after the campaign start; the campaign is aimed at likely visitors (60 % of
the loyal exposed, 35 % of the occasional, 20 % of passers-by), one to five impressions in the
first week, and adds a visit within a week for 12 % of the exposed. Each exposed phone's visits
are generated with and without the ad, so the true lift (over the exposed the sensors knew
before the campaign, which is what the matched comparison covers) is exact. 1,500 phones
that randomize their MAC visit too (the hash can never be found on them).

Seed 5 was used to choose the strata and the 90-day default; seeds 11-20 are held out::

    python -m footfall.tools.evaluate_exposure --seeds 11-20
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
from pathlib import Path

DAY = 86400.0
T = 1_780_000_000.0  # campaign start
HABITS = {"loyal": (0.15, 1.0, 0.6), "occasional": (0.35, 0.25, 0.35), "passer": (0.5, 0.04, 0.2)}
EFFECT = 0.12


def md5(i: int) -> str:
    return hashlib.md5(f"phone-{i}".encode()).hexdigest()


def _visit(rows: list, i: int, t: float, cls: str, hashed: bool = True) -> None:
    day = f"d{int(t // DAY)}"
    rows.append(("dealer", f"k{i}", f"k{i}", 0 if hashed else 1, md5(i) if hashed else None, t, t + 600, 600.0,
                 600.0 if cls == "visitor" else 0.0, cls, 0, "s1", '["s1"]', 1, day, 10))  # fmt: skip


def world(conn, seed: int = 5) -> tuple[str, float]:
    rng = random.Random(seed)
    rows: list = []
    exposures = ["mac_md5,ts,channel"]
    with_ad, without_ad = 0, 0
    n_exposed = n_known = 0
    for i in range(4000):
        habit = rng.choices(list(HABITS), weights=[h[0] for h in HABITS.values()])[0]
        _, weekly, p_exposed = HABITS[habit]
        # A Poisson habit over 90 days before and 35 after the start.
        t = T - 90 * DAY
        base = []
        while True:
            t += rng.expovariate(weekly / (7 * DAY))
            if t > T + 35 * DAY:
                break
            base.append(t)
        for v in base:
            _visit(rows, i, v, "visitor" if habit != "passer" or rng.random() < 0.3 else "passerby")
        heard_before = any(v < T for v in base)
        if habit == "passer" and rng.random() < 0.8:
            _visit(rows, i, T - rng.uniform(1, 89) * DAY, "passerby")  # heard walking past before
            heard_before = True
        if rng.random() < p_exposed:
            n_exposed += 1
            t0 = T + rng.uniform(0, 21) * DAY
            shown = [t0] + [t0 + rng.uniform(0, 7 * DAY) for _ in range(rng.choice([0, 0, 1, 2, 4]))]
            for s in shown:
                exposures.append(f"{md5(i)},{s:.0f},display")
            # Visits counted as the report counts them: visitor class, within 7 days after t0.
            base_hit = any(t0 < v <= t0 + 7 * DAY for v in base)
            extra = rng.random() < EFFECT
            if extra:
                _visit(rows, i, t0 + rng.uniform(60, 7 * DAY - 60), "visitor")
            # The matched lift is over the exposed the sensors knew before the campaign.
            if heard_before:
                n_known += 1
                without_ad += base_hit
                with_ad += base_hit or extra
    # Phones that randomize their MAC: visitors the ad platform's hash can never be found on.
    for i in range(4000, 5500):
        _visit(rows, i, T + rng.uniform(0, 35) * DAY, "visitor", hashed=False)
    conn.executemany(
        """INSERT INTO visits (site, device, device_key, randomized, partner_hash, first_seen, last_seen, dwell_s,
                               inside_s, class, long_stay, best_sensor, sensors, n_sensor_visits, day, hour)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )
    conn.commit()
    return "\n".join(exposures) + "\n", (with_ad - without_ad) / n_known


def evaluate(seed: int, pre_days: float) -> dict[str, float | bool]:
    from footfall.hub import store
    from footfall.hub.o2o import exposure

    with tempfile.TemporaryDirectory() as d:
        conn = store.connect(Path(d) / "hub.db")
        text, truth = world(conn, seed=seed)
        exposure.import_exposures(conn, text, "c", now=T + 60 * DAY)
        r = exposure.report(conn, "c", pre_days=pre_days)
        conn.close()
    m = r["matched"]
    return {"truth": truth, "matched": m["lift"], "covered": m["lift_low"] <= truth <= m["lift_high"],
            "naive": r["naive"]["lift"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="11-20", help="e.g. 11-20 or 5,7")
    ap.add_argument("--pre-days", type=float, nargs="+", default=[30.0, 90.0])
    args = ap.parse_args(argv)
    if "-" in args.seeds:
        lo, hi = (int(x) for x in args.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(x) for x in args.seeds.split(",")]
    print("pre_days | seeds | true lift | matched lift (mean error) | interval covers | naive lift (mean error)")
    for pre in args.pre_days:
        rows = [evaluate(s, pre) for s in seeds]
        truth = statistics.mean(r["truth"] for r in rows)
        m_err = statistics.mean(r["matched"] - r["truth"] for r in rows)
        n_err = statistics.mean(r["naive"] - r["truth"] for r in rows)
        covered = sum(bool(r["covered"]) for r in rows)
        print(
            f"{pre:.0f} | {args.seeds} | {truth:.3f} | {truth + m_err:.3f} ({m_err:+.3f}) | {covered}/{len(rows)} | "
            f"{truth + n_err:.3f} ({n_err:+.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
