"""The hub's /metrics: sensor fleet health in Prometheus format, behind the API key."""

import json
import time

from fastapi.testclient import TestClient

from footfall import schema
from footfall.hub import auth, store
from footfall.hub.api import WebSettings, create_app
from footfall.hub.config import HubConfig
from footfall.hub.ingest import ingest_many


def test_metrics_show_online_stale_and_offline_sensors(tmp_path):
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    now = time.time()
    config = HubConfig(site="shop", db=str(db))
    msgs = []
    for sensor, state in (("s1", "online"), ("s2", "offline"), ("s3", "online")):
        status = schema.status_payload(site="shop", sensor=sensor, state=state, ts=now, version="0.1.0")
        msgs.append((f"footfall/shop/{sensor}/status", schema.dumps(status)))
    health = {
        "v": 1, "type": "health", "id": "h1", "site": "shop", "sensor": "s1", "ts": now, "version": "0.1.0",
        "uptime_s": 120.0, "frames": 5000, "frames_per_s": 41.5, "rejected": 3, "devices_tracked": 17,
        "backlog": 12, "dropped": 0, "cpu_temp_c": 51.2,
    }  # fmt: skip
    msgs.append(("footfall/shop/s1/health", json.dumps(health).encode()))
    msgs.append(("footfall/shop/s1/visit", b"not json"))
    ingest_many(conn, msgs, config)
    # s3 said online long ago and went silent: stale.
    conn.execute("UPDATE sensors SET last_message = ? WHERE sensor = 's3'", (now - 3600,))
    conn.commit()
    key = auth.create_api_key(conn, "prometheus")
    conn.close()

    client = TestClient(create_app(db, WebSettings(refresh_interval_s=0)))
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'footfall_sensor_up{site="shop",sensor="s1"} 1' in text
    assert 'footfall_sensor_up{site="shop",sensor="s2"} 0' in text
    assert 'footfall_sensor_up{site="shop",sensor="s3"} 0.5' in text
    assert 'footfall_sensor_buffer_backlog{site="shop",sensor="s1"} 12' in text
    assert 'footfall_sensor_cpu_temperature_celsius{site="shop",sensor="s1"} 51.2' in text
    assert 'footfall_sensor_frames_per_second{site="shop",sensor="s1"} 41.5' in text
    assert 'footfall_ingest_rejected_total{reason="garbage"} 1' in text
    for line in text.splitlines():
        assert line.startswith("#") or " " in line
