"""footfall hub segment / cluster: the CLI mirrors hub/segments.py, with clear errors."""

import json
import subprocess
import sys
import time

from footfall import topics
from footfall.hub import store
from footfall.hub.config import HubConfig
from footfall.hub.ingest import ingest_many
from footfall.payloads import dumps, visit_payload

# Three days ending yesterday: segments look back a fixed number of days from now, so a fixed
# date made this test fail once the calendar passed it.
T0 = (time.time() // 86400 - 3) * 86400 + 8 * 3600


def run(*args):
    return subprocess.run([sys.executable, "-m", "footfall", "hub", *args], capture_output=True, text=True)


def visit(device, first, dwell, rssi, visitor):
    return visit_payload(
        site="shop", sensor="s1", device=device, randomized=False, first_seen=first, last_seen=first + dwell,
        inside_s=dwell if visitor else 0.0, sightings=5, rssi_max=rssi, rssi_mean=rssi - 5.0,
        visit_class="visitor" if visitor else "passerby", long_stay=False, fingerprint="f" * 16, ie_ids=[0, 1],
    )  # fmt: skip


def test_segment_add_list_refresh_and_cluster(tmp_path):
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    payloads = []
    for i in range(60):
        device = f"{i:032x}"
        for day in range(3):
            start = T0 + day * 86400 + (i % 10) * 600
            short = i % 2 == 0
            payloads.append(visit(device, start, 120 if short else 1800, -50, True))
    ingest_many(conn, [(topics.topic("shop", "s1", "visit"), dumps(p)) for p in payloads], HubConfig(site="shop"))
    conn.close()

    rule = json.dumps({"all": [{"field": "last_dwell_s", "op": "<", "value": 300}]})
    r = run("segment", "add", "short visits", rule, "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"segment": "short visits", "members": 30}
    r = run("segment", "add", "broken", '{"all": [{"field": "nope", "op": "<", "value": 1}]}', "--db", str(db))
    assert r.returncode == 2 and "unknown field 'nope'" in r.stderr
    r = run("segment", "add", "broken", "{not json", "--db", str(db))
    assert r.returncode == 2
    r = run("segment", "refresh", "--db", str(db))
    assert json.loads(r.stdout) == {"short visits": 30}
    listed = [json.loads(line) for line in run("segment", "list", "--db", str(db)).stdout.splitlines()]
    assert [s["name"] for s in listed] == ["short visits"]
    r = run("cluster", "--db", str(db), "--lookback-days", "3650")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["k"] >= 2 and sum(out["clusters"].values()) == 60
