"""``python -m footfall.tools.fit_link_model``: measure the default link model on the tuning seeds.

Simulated days of :data:`footfall.tools.evaluate_metrics.TUNING_SEEDS` go through the real
agent; the stays of globally administered MACs (the phones a hub can identify, as a site's own
self-calibration does) are measured by :func:`footfall.hub.linkmodel.fit`, and the result is
written to ``hub/linkmodel_default.json``. No ground truth is read: the default is what a hub
would have measured on those days. Held-out seeds are never used.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from footfall.hub import linkmodel
from footfall.tools.evaluate_pipeline import TUNING_SEEDS, scenario, simulate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(linkmodel.__file__).with_name("linkmodel_default.json")))
    args = p.parse_args(argv)
    stays: list[list[linkmodel.Scan]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in TUNING_SEEDS:
            run = simulate(scenario(seed), Path(tmp))
            windows = [(d["open"], d["close"]) for d in run.truth["days"]]
            stays += linkmodel.identified_visits(run.visits, lambda t, w=windows: any(a <= t <= b for a, b in w))
            print(f"seed {seed}: {len(stays)} identified visits so far")
    model = linkmodel.fit(stays, source=f"simulator tuning seeds {TUNING_SEEDS[0]}-{TUNING_SEEDS[-1]}, global MACs")
    Path(args.out).write_text(json.dumps(model.to_dict(), indent=1) + "\n")
    print(f"wrote {args.out}: {model.visitors} visits, {model.sweeps_per_visitor:.1f} scans each")
    print("RSSI ratio same/other per 2 dB:", [round(x, 2) for x in model.rssi_ratio])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
