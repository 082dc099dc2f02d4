"""The broker decides which sensors exist: a sensor added after go-live is ingested without
touching hub.toml, a revoked one is refused and counted, nothing refused is lost (hub/roster.py)."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from footfall import payloads, topics
from footfall.hub import roster, store
from footfall.hub.config import HubConfig, IngestConfig, MqttConfig
from footfall.hub.ingest import ingest_many
from footfall.hub.monitor import MonitorSources
from footfall.hub.monitor import roster as monitor_roster
from footfall.tools import provision as pv
from footfall.tools.provision import mosquitto
from tests.test_hub_ingest import T0, count, hub_config, publish, publisher, visit, wait_for
from tests.test_hub_ingest import running as hub_running
from tests.test_provision import SITE, HubBroker, as_user, bundle_files, needs_broker, ok, site  # noqa: F401


def _visits(sensor: str, n: int, *, site_id: str = SITE, tag: str = "") -> list[tuple[str, dict[str, Any]]]:
    return [
        (topics.topic(site_id, sensor, "visit"), visit(sensor, f"{sensor}{tag}d{i}", T0 + i, T0 + i + 60, site=site_id))
        for i in range(n)
    ]


def _provisioned_hub(site_dir: Path, broker: HubBroker, tmp_path: Path, **kw: Any) -> HubConfig:
    """The hub as the operator guide sets it up: TLS, its own identity, the roster from broker/."""
    f = bundle_files(site_dir, mosquitto.HUB_USER)
    return HubConfig(
        site=SITE,
        db=str(tmp_path / "hub.db"),
        roster=str(site_dir / "broker" / "roster.json"),
        mqtt=MqttConfig(
            host="127.0.0.1",
            port=broker.port,
            username=mosquitto.HUB_USER,
            password=f["password"],
            tls=True,
            ca_certs=f["ca"],
            certfile=f["cert"],
            keyfile=f["key"],
            client_id=f"footfall-hub-{SITE}",
        ),
        ingest=IngestConfig(batch_max=200, batch_ms=20, log_every_s=0.0),
        **kw,
    )


def _rejects(db: str) -> dict[str, int]:
    conn = store.connect(db)
    return {r["reason"]: r["count"] for r in conn.execute("SELECT reason, count FROM ingest_rejects")}


def _sensor_publish(site_dir: Path, broker: HubBroker, sensor: str, msgs: list[tuple[str, dict[str, Any]]]) -> None:
    c = ok(as_user(site_dir, broker.port, sensor))
    try:
        for t, p in msgs:
            assert not c.publish(t, payloads.dumps(p).decode()).is_failure
    finally:
        c.close()


@needs_broker
def test_sensor_added_after_go_live_is_ingested_and_a_revoked_one_refused(
    site: tuple[Path, HubBroker],  # noqa: F811
    tmp_path: Path,
) -> None:
    site_dir, broker = site
    broker.start()
    # The setup: hub.toml keeps a hand-written list that nobody updates.
    cfg = _provisioned_hub(site_dir, broker, tmp_path, sensors=["s1"])
    with hub_running(cfg) as hub:
        # Go-live: s2 (provisioned, not in hub.toml) is ingested.
        _sensor_publish(site_dir, broker, "s2", _visits("s2", 5))
        # A sensor added after go-live: provision, deploy broker/, reload. No hub.toml edit, no restart.
        pv.add_sensor(site_dir, "s3")
        broker.install()
        broker.reload()
        wait_for(lambda: "s3" in (hub.writer.gate.roster.active if hub.writer.gate.roster else ()), what="roster")
        _sensor_publish(site_dir, broker, "s3", _visits("s3", 40))
        wait_for(lambda: hub.stats.stored >= 45, what="s2 and s3 visits")
    assert count(cfg.db, "SELECT count(*) FROM sensor_visits WHERE sensor = 's3'") == 40
    assert _rejects(cfg.db) == {}

    # s2 is stolen: what it sends while the hub is down waits in the hub's session at the broker.
    _sensor_publish(site_dir, broker, "s2", _visits("s2", 7, tag="stolen"))
    pv.revoke(site_dir, "s2", reason="stolen")
    broker.install()
    broker.reload()
    with hub_running(cfg) as hub:
        wait_for(lambda: hub.stats.received >= 7, what="queued messages")
    assert _rejects(cfg.db) == {"revoked": 7}
    assert count(cfg.db, "SELECT count(*) FROM sensor_visits WHERE device LIKE 's2stolen%'") == 0
    assert count(cfg.db, "SELECT count(*) FROM sensor_quarantine WHERE sensor = 's2' AND reason = 'revoked'") == 7
    # /metrics expects the provisioned sensors, not the revoked one.
    expected = monitor_roster(MonitorSources.from_config(cfg, env={})).expected
    assert expected == {(SITE, "s1"): "config,provisioning", (SITE, "s3"): "provisioning"}


def test_without_an_allow_list_every_sensor_is_ingested(broker: Any, tmp_path: Path) -> None:
    cfg = hub_config(broker, tmp_path)  # no sensors, no roster: the broker's ACL is the authority
    msgs = _visits("new-sensor", 10, site_id="st")
    with hub_running(cfg) as hub, publisher(broker) as pub:
        publish(pub, msgs)
        wait_for(lambda: hub.stats.stored >= 10, what="visits")
    assert _rejects(cfg.db) == {}


def test_unknown_sensor_is_counted_logged_quarantined_and_admitted_without_loss(
    broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = hub_config(broker, tmp_path, sensors=["s1"])
    with caplog.at_level(logging.WARNING, "footfall.hub.ingest"), hub_running(cfg) as hub, publisher(broker) as pub:
        publish(pub, _visits("s9", 30, site_id="st") + _visits("s1", 3, site_id="st"))
        wait_for(lambda: hub.stats.received >= 33, what="messages")
        assert hub.stats.rejected == {"unknown_sensor": 30}
        assert count(cfg.db, "SELECT count(*) FROM sensor_quarantine WHERE sensor = 's9'") == 30
        assert any("s9" in r.getMessage() and "--admit s9" in r.getMessage() for r in caplog.records)
        # The operator admits it while ingest runs: no restart, the 30 come back, new ones go straight in.
        roster.admit(store.connect(cfg.db), "st", "s9")
        wait_for(lambda: count(cfg.db, "SELECT count(*) FROM sensor_visits WHERE sensor = 's9'") == 30, what="replay")
        publish(pub, _visits("s9", 5, site_id="st", tag="later"))
        wait_for(lambda: count(cfg.db, "SELECT count(*) FROM sensor_visits WHERE sensor = 's9'") == 35, what="new")
    assert count(cfg.db, "SELECT count(*) FROM sensor_quarantine") == 0
    assert _rejects(cfg.db) == {"unknown_sensor": 30}  # the history of what was refused stays


def test_cli_lists_and_admits_quarantined_sensors(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    toml = tmp_path / "hub.toml"
    toml.write_text(f'site = "st"\ndb = "{db}"\nsensors = ["s1"]\n')
    conn = store.connect(db)
    cfg = HubConfig(site="st", db=str(db), sensors=["s1"])
    msgs = [(t, payloads.dumps(p)) for t, p in _visits("s7", 4, site_id="st")]
    assert ingest_many(conn, msgs, cfg) == ["rejected:unknown_sensor"] * 4
    # Replaying the same messages again (a redelivery) quarantines them again: admitted, they are
    # duplicates by message id, stored once.
    ingest_many(conn, msgs[:2], cfg)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "footfall", "hub", "sensors", "--config", str(toml), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    lines = [json.loads(x) for x in cli().stdout.splitlines()]
    assert {"site": "st", "quarantined": "s7", "reason": "unknown_sensor", "count": 6} | {
        k: v for k, v in lines[-1].items() if k.endswith("received")
    } == lines[-1]
    out = cli("--admit", "s7")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["admitted"] == "s7" and result["replayed"] == 6
    assert result["outcomes"] == {"stored": 4, "duplicate": 2}
    assert conn.execute("SELECT count(*) FROM sensor_visits WHERE sensor = 's7'").fetchone()[0] == 4
    assert conn.execute("SELECT count(*) FROM sensor_quarantine").fetchone()[0] == 0
    # Admitted for good: later messages are stored directly.
    more = [(t, payloads.dumps(p)) for t, p in _visits("s7", 2, site_id="st", tag="x")]
    assert ingest_many(conn, more, cfg) == ["stored", "stored"]


def test_revoked_sensor_cannot_be_admitted_and_the_roster_is_re_read(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    pv.init_site(site_dir, SITE, ["hub"])
    pv.add_sensor(site_dir, "s1")
    pv.add_sensor(site_dir, "s2")
    conn = store.connect(tmp_path / "hub.db")
    cfg = HubConfig(site=SITE, db=str(tmp_path / "hub.db"), roster=str(site_dir / "broker" / "roster.json"))
    clock = [time.monotonic()]
    from footfall.hub.ingest import Writer

    writer = Writer(conn, cfg)
    writer.gate.clock = lambda: clock[0]
    assert writer.write([_incoming("s2", 1)]) == ["stored"]
    pv.revoke(site_dir, "s2")
    clock[0] += roster.CHECK_EVERY_S + 1  # the file is re-read while ingest runs: no restart
    assert writer.write([_incoming("s2", 2)]) == ["rejected:revoked"]
    with pytest.raises(ValueError, match="revoked"):
        roster.release(conn, writer, SITE, "s2")
    # Re-provisioned, it is let in, and what it sent while revoked can be replayed.
    pv.add_sensor(site_dir, "s2")
    clock[0] += roster.CHECK_EVERY_S + 1
    writer.gate.refresh()
    assert roster.release(conn, writer, SITE, "s2") == {"stored": 1}
    data = json.loads((site_dir / "broker" / "roster.json").read_text())
    assert data["site"] == SITE and data["sensors"]["s2"]["status"] == "active"
    assert "password_hash" not in json.dumps(data)


def test_an_unreadable_roster_keeps_the_last_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "roster.json"
    path.write_text(json.dumps({"version": 1, "site": "st", "sensors": {"s2": {"status": "revoked"}}}))
    conn = sqlite3.connect(":memory:")
    gate = roster.SensorGate(conn, HubConfig(site="st", roster=str(path)), check_every_s=0)
    assert gate.refuse("s2") is not None and gate.refuse("s1") is None
    path.write_text('{"site": "st", "sens')  # half-copied
    time.sleep(0.01)
    gate.refresh()
    assert gate.refuse("s2") is not None  # still revoked
    assert any("keeping the last one read" in r.getMessage() for r in caplog.records)


def _incoming(sensor: str, i: int) -> Any:
    from footfall.hub.ingest import Incoming

    t, p = _visits(sensor, i + 1, tag=str(i))[i]
    return Incoming(t, payloads.dumps(p))


def test_hub_bundle_names_the_roster(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    pv.init_site(site_dir, SITE, ["hub"])
    text = (site_dir / "hub" / "hub.toml").read_text()
    assert 'roster = "/etc/footfall/roster.json"' in text
    assert (site_dir / "broker" / "roster.json").stat().st_mode & 0o777 == 0o644


def test_quarantine_is_bounded(tmp_path, monkeypatch):
    """A sensor nobody admits cannot fill the disk: past the cap the oldest go, with a log line."""
    from footfall import payloads, topics
    from footfall.hub import roster, store
    from footfall.hub.config import HubConfig
    from footfall.hub.ingest import ingest_many

    monkeypatch.setattr(roster, "QUARANTINE_MAX", 50)
    conn = store.connect(tmp_path / "hub.db")
    cfg = HubConfig(site="shop", sensors=["s1"], db=str(tmp_path / "hub.db"))
    now = 1_790_000_000.0
    for batch in range(4):
        msgs = [
            (
                topics.topic("shop", "s9", "presence"),
                payloads.dumps(
                    payloads.presence_payload(
                        site="shop", sensor="s9", ts=now + batch * 100 + i, window_s=60, devices=1, inside=0
                    )
                ),
            )
            for i in range(30)
        ]
        ingest_many(conn, msgs, cfg)
    rows = conn.execute("SELECT count(*), min(id), max(id) FROM sensor_quarantine").fetchone()
    assert rows[0] <= 50 and rows[2] - rows[1] + 1 <= 50
