"""``python -m footfall.tools.fit_link_model``: measure the default link model on the tuning seeds.

Simulated days of :data:`footfall.tools.evaluate_pipeline.FIRST_TUNING_SEEDS` go through the real
agent; the stays of globally administered MACs (the phones a hub can identify, as a site's own
self-calibration does) are measured by :func:`footfall.hub.linkmodel.fit`, and the result is
written to ``hub/linkmodel_default.json``. No ground truth is read: the default is what a hub
would have measured on those days. Held-out seeds are never used.

``--shapes`` measures instead how the hub's stays of each class look (``Defaults.shape_visit``
and ``shape_pass`` in ``hub/estimate_defaults.py``): the session EM without a prior, on the tuning days
with two or three sensors (where the signal pattern anchors which class is which), averaged
over those stores. No ground truth is read either; the values are printed to be copied.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from footfall.hub import linkmodel
from footfall.tools.evaluate_pipeline import FIRST_TUNING_SEEDS, TUNING_SEEDS, scenario, simulate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(linkmodel.__file__).with_name("linkmodel_default.json")))
    p.add_argument("--shapes", action="store_true", help="measure the default stay shapes per class instead")
    args = p.parse_args(argv)
    if args.shapes:
        return measure_shapes()
    stays: list[list[linkmodel.Scan]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in FIRST_TUNING_SEEDS:
            run = simulate(scenario(seed), Path(tmp))
            windows = [(d["open"], d["close"]) for d in run.truth["days"]]
            stays += linkmodel.identified_visits(run.visits, lambda t, w=windows: any(a <= t <= b for a, b in w))
            print(f"seed {seed}: {len(stays)} identified visits so far")
    model = linkmodel.fit(
        stays, source=f"simulator tuning seeds {FIRST_TUNING_SEEDS[0]}-{FIRST_TUNING_SEEDS[-1]}, global MACs"
    )
    Path(args.out).write_text(json.dumps(model.to_dict(), indent=1) + "\n")
    print(f"wrote {args.out}: {model.visitors} visits, {model.sweeps_per_visitor:.1f} scans each")
    print("RSSI ratio same/other per 2 dB:", [round(x, 2) for x in model.rssi_ratio])
    return 0


def measure_shapes() -> int:
    from dataclasses import replace

    from footfall.hub.analysis import first_pass_stays, fit_models
    from footfall.hub.estimate import DEFAULTS, SHAPES
    from footfall.hub.sitefit import shape_em

    plain = replace(DEFAULTS, shape_prior_n=0.0)
    found: list[tuple[dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in TUNING_SEEDS:
            sc = scenario(seed)
            if sc.sensors < 2:
                continue
            run = simulate(sc, Path(tmp))
            windows = [(d["open"], d["close"]) for d in run.truth["days"]]

            def is_open(t: float, w: list[tuple[float, float]] = windows) -> bool:
                return any(a <= t <= b for a, b in w)

            vs = sorted(run.visits, key=lambda v: (v["first_seen"], v["id"]))
            model, link_model = fit_models(vs, is_open)
            stays = [s for s in first_pass_stays(vs, link_model) if is_open(s.first)]
            pi, p_vis, p_pas = shape_em(stays, model.inside, plain.passby_max_s, plain)
            found.append((p_vis, p_pas))
            print(f"seed {seed}: visits {pi:.3f} of {len(stays)} stays; visit {_fmt(p_vis)}; walk past {_fmt(p_pas)}")
    for name, i in (("shape_visit", 0), ("shape_pass", 1)):
        mean = tuple(round(sum(f[i][k] for f in found) / len(found), 3) for k in SHAPES)
        print(f"{name}: tuple[float, float, float] = {mean}")
    return 0


def _fmt(p: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in p.items())


if __name__ == "__main__":
    raise SystemExit(main())
