"""Secure by default (issue 15, item 3): what `footfall provision init-site` gives a site untouched.

Mutual TLS with the certificate's CN as the MQTT username, an encrypted CA key, TLS 1.2 only with
ECDHE+AEAD suites, a CRL renewal timer, a device-id key that can be rotated, no secret on a
command line. Every broker here is the real Mosquitto running the generated mosquitto.conf.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from footfall.edge_agent.identity import Identifier
from footfall.tools import provision as pv
from footfall.tools.provision import ca, mosquitto
from footfall.tools.provision.state import save
from footfall.tools.provision_cli import PASSPHRASE_ENV, register_provision
from tests.conftest import free_port
from tests.test_provision import (
    SITE,
    Client,
    HubBroker,
    _install_root,
    as_user,
    bundle_files,
    connect,
    hub_listening,
    needs_broker,
    ok,
    receive,
    steal,
)

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
GUIDE = REPO / "docs" / "operator-guide.md"
PASSPHRASE = "correct horse battery staple"
INSTALLED_FOOTFALL = "/opt/footfall/.venv/bin/footfall"


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="footfall")
    register_provision(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["provision", *argv])
    return args.func(args)


@pytest.fixture(autouse=True)
def _no_passphrase_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A passphrase exported in the shell running the tests must not decide what they see.
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    path = tmp_path / "ca-passphrase"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def secure_site(tmp_path: Path, passfile: Path) -> Iterator[tuple[Path, HubBroker]]:
    """A site from `init-site` with nothing but the passphrase, sensors s1 and s2; broker not started."""
    root = _install_root()
    port = free_port()
    site_dir = tmp_path / "site"
    d = str(site_dir)
    common = ["--dir", d, "--ca-passphrase-file", str(passfile)]
    assert (
        run_cli(
            "init-site",
            *common,
            "--site",
            SITE,
            "--host",
            "hub.store-042.example",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--broker-dir",
            str(root / "etc"),
            "--persistence-location",
            f"{root}/data/",
        )
        == 0
    )
    # The only change from the defaults: the broker logs where the test can read it.
    pv.configure_hub(site_dir, log_dest=["stderr"])
    for sensor in ("s1", "s2"):
        assert run_cli("add-sensor", *common, sensor) == 0
    broker = HubBroker(site_dir, root / "etc", port)
    yield site_dir, broker
    broker.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def secure_running(secure_site: tuple[Path, HubBroker]) -> tuple[Path, HubBroker]:
    secure_site[1].start()
    return secure_site


# -- 1. mutual TLS, the certificate's CN as the MQTT identity ------------------------------------


def test_init_site_defaults_to_mtls_with_cn_identity(secure_site: tuple[Path, HubBroker]) -> None:
    site_dir, _ = secure_site
    conf = (site_dir / "broker" / "mosquitto.conf").read_text()
    for line in ("require_certificate true", "use_identity_as_username true", "tls_version tlsv1.2"):
        assert line in conf.splitlines(), line
    assert re.search(r"^crlfile .*/crl\.pem$", conf, re.M)
    state = pv.load(site_dir)
    assert state.broker["require_certificate"] and state.broker["use_identity_as_username"]
    # Each identity's certificate names exactly the user it logs in as, and the configs present it.
    hub_cert = ca.load_cert((site_dir / "hub" / f"{pv.HUB_USER}.crt").read_bytes())
    assert ca.common_name(hub_cert) == pv.HUB_USER
    hub = tomllib.loads((site_dir / "hub" / "hub.toml").read_text())["mqtt"]
    assert hub["username"] == pv.HUB_USER and hub["tls"] is True
    assert hub["certfile"].endswith(f"/{pv.HUB_USER}.crt") and hub["keyfile"].endswith(f"/{pv.HUB_USER}.key")
    for sensor in ("s1", "s2"):
        bundle = site_dir / "sensors" / sensor
        assert ca.common_name(ca.load_cert((bundle / f"{sensor}.crt").read_bytes())) == sensor
        agent = tomllib.loads((bundle / "agent.toml").read_text())["mqtt"]
        assert agent["username"] == sensor
        assert agent["certfile"] == f"/etc/footfall/{sensor}.crt" and agent["keyfile"] == f"/etc/footfall/{sensor}.key"


@needs_broker
def test_a_password_without_a_certificate_is_refused(secure_running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = secure_running
    for who in ("s1", pv.HUB_USER):
        f = bundle_files(site_dir, who)
        leaked = connect(broker.port, ca_file=f["ca"], username=who, password=f["password"])
        assert isinstance(leaked, str), f"{who}'s password alone logged in"
        for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
            assert isinstance(connect(broker.port, ca_file=f["ca"], protocol=protocol), str)
    assert "peer did not return a certificate" in broker.log.read_text()
    # The right certificate works, for a sensor and for the hub, with no password at all.
    hub = hub_listening(site_dir, broker.port)
    s1 = ok(as_user(site_dir, broker.port, "s1", password=None, protocol=mqtt.MQTTv5))
    assert s1.publish(f"footfall/{SITE}/s1/visit", "mine").getName() == "Success"
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", "mine")
    s1.close()
    hub.close()


@needs_broker
def test_a_sensor_certificate_acts_only_as_its_own_sensor(secure_running: tuple[Path, HubBroker]) -> None:
    """s1's certificate with s2's username and password is still s1: it cannot write s2's topics."""
    site_dir, broker = secure_running
    s1, s2 = bundle_files(site_dir, "s1"), bundle_files(site_dir, "s2")
    hub = hub_listening(site_dir, broker.port)
    forger = ok(
        connect(
            broker.port,
            ca_file=s1["ca"],
            cert=s1["cert"],
            key=s1["key"],
            username="s2",
            password=s2["password"],
            protocol=mqtt.MQTTv5,
        )
    )
    assert forger.publish(f"footfall/{SITE}/s2/visit", "forged").getName() == "Not authorized"
    assert forger.publish(f"footfall/{SITE}/s2/status", "forged").getName() == "Not authorized"
    assert forger.publish(f"footfall/{SITE}/s1/visit", "as s1").getName() == "Success"
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", "as s1")
    assert hub.messages.empty()
    forger.close()  # one connection per user: the next one, as s1 again, would push it off
    # MQTT 3.1.1, which cannot say "denied": the forged message is dropped, the marker after it arrives.
    v311 = ok(connect(broker.port, ca_file=s1["ca"], cert=s1["cert"], key=s1["key"], username="s2"))
    v311.publish(f"footfall/{SITE}/s2/visit", "forged")
    v311.publish(f"footfall/{SITE}/s1/visit", "marker")
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", "marker")
    assert hub.messages.empty()
    v311.close()
    # Nor can it pass for the hub and read the site: it only ever gets its own config.
    hub_pw = bundle_files(site_dir, pv.HUB_USER)["password"]
    spy = ok(
        connect(broker.port, ca_file=s1["ca"], cert=s1["cert"], key=s1["key"], username=pv.HUB_USER, password=hub_pw)
    )
    spy.subscribe(f"footfall/{SITE}/#")
    real_s2 = ok(as_user(site_dir, broker.port, "s2", username=None, password=None))
    real_s2.publish(f"footfall/{SITE}/s2/visit", "s2 data")
    assert receive(hub) == (f"footfall/{SITE}/s2/visit", "s2 data")
    sync = ok(as_user(site_dir, broker.port, pv.SYNC_USER, password=None))
    sync.publish(f"footfall/{SITE}/s1/config", "for s1")
    assert receive(spy) == (f"footfall/{SITE}/s1/config", "for s1")
    assert spy.messages.empty()
    for c in (spy, real_s2, sync, hub):
        c.close()


@needs_broker
def test_the_agent_and_hub_ingest_present_their_certificates(
    secure_running: tuple[Path, HubBroker], captures: list[Path], tmp_path: Path
) -> None:
    """The real agent and the real ingest, configured by their bundles, get through mutual TLS."""
    from footfall.hub import config as hub_config
    from footfall.hub import store
    from footfall.hub.ingest import Ingestor

    site_dir, broker = secure_running

    def installed(bundle: Path, name: str) -> Path:
        # The bundle as if copied to /etc/footfall: its paths point at its own directory.
        out = tmp_path / f"{bundle.name}-{name}"
        out.write_text((bundle / name).read_text().replace("/etc/footfall/", f"{bundle}/"))
        return out

    hub_toml = installed(site_dir / "hub", "hub.toml")
    cfg = hub_config.load(hub_toml, env={})
    cfg.db = str(tmp_path / "hub.db")
    cfg.roster = str(site_dir / "broker" / "roster.json")
    cfg.mqtt.port = broker.port
    cfg.retention.raw_days = 100 * 365  # the recorded captures are a few years old
    assert cfg.mqtt.certfile == str(site_dir / "hub" / f"{pv.HUB_USER}.crt")
    ingestor = Ingestor(cfg)
    thread = threading.Thread(target=ingestor.run, daemon=True)
    thread.start()
    try:
        assert ingestor.ready.wait(15), broker.log.read_text()[-2000:]
        agent_toml = installed(site_dir / "sensors" / "s1", "agent.toml")
        pcap = min(captures, key=lambda p: p.stat().st_size)
        proc = subprocess.run(
            [sys.executable, "-m", "footfall", "agent", "replay", str(pcap), "--config", str(agent_toml),
             "--broker", f"127.0.0.1:{broker.port}", "--buffer", str(tmp_path / "buffer.db"),
             "--flush-timeout", "20"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        conn = store.connect(tmp_path / "hub.db")
        deadline = time.monotonic() + 20
        while not conn.execute("SELECT count(*) FROM sensor_visits WHERE sensor = 's1'").fetchone()[0]:
            assert time.monotonic() < deadline, (proc.stderr[-2000:], broker.log.read_text()[-2000:])
            time.sleep(0.2)
        conn.close()
    finally:
        ingestor.stop()
        thread.join(10)
    log = broker.log.read_text()
    assert re.search(r"New client connected from \S+ as s1 \(.*u's1'\)", log), log[-2000:]
    assert re.search(rf"New client connected from \S+ as {pv.HUB_USER} \(.*u'{pv.HUB_USER}'\)", log), log[-2000:]


# -- the sync job's own MQTT identity --------------------------------------------------------------


def _install_hub_files(site_dir: Path, etc: Path, db: Path) -> Path:
    """hub/ plus roster.json and crl.pem installed as the operator guide does, into ``etc`` for
    /etc/footfall; returns the installed hub.toml (its paths point at ``etc`` and ``db``)."""
    etc.mkdir(exist_ok=True)
    for src in [*(site_dir / "hub").iterdir(), site_dir / "broker" / "roster.json", site_dir / "broker" / "crl.pem"]:
        shutil.copyfile(src, etc / src.name)
    text = (etc / "hub.toml").read_text().replace("/etc/footfall/", f"{etc}/")
    (etc / "hub.toml").write_text(text.replace("/var/lib/footfall/hub.db", str(db)))
    return etc / "hub.toml"


def _sync_config(tmp_path: Path, hub_toml: Path, name: str = "sync.toml") -> Any:
    from footfall.cloud_sync import config as sync_config

    path = tmp_path / name
    path.write_text(f'[sync]\nhub_config = "{hub_toml}"\n')
    return sync_config.load(path, env={})


def _visit_message(sensor: str, device: str, first: float) -> tuple[str, bytes]:
    from footfall import payloads, topics

    payload = payloads.visit_payload(
        site=SITE, sensor=sensor, device=device, randomized=False, first_seen=first, last_seen=first + 300,
        inside_s=200, sightings=9, rssi_max=-55, rssi_mean=-60.0, visit_class="visitor", long_stay=False,
        fingerprint="fp", ie_ids=[0, 1, 50],
    )  # fmt: skip
    return topics.topic(SITE, sensor, "visit"), payloads.dumps(payload)


@needs_broker
def test_the_sync_identity_reads_and_writes_only_the_sensors_config(secure_running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = secure_running
    hub = hub_listening(site_dir, broker.port)
    sync = ok(as_user(site_dir, broker.port, pv.SYNC_USER, password=None, protocol=mqtt.MQTTv5))
    for kind in ("visit", "presence", "status", "health"):
        assert sync.publish(f"footfall/{SITE}/s1/{kind}", "forged").getName() == "Not authorized", kind
    assert sync.publish("footfall/store-043/s1/config", "another site").getName() == "Not authorized"
    assert sync.publish(f"footfall/{SITE}/s1/config", "for s1").getName() == "Success"
    # Published in order by one client: the config arriving means nothing forged came before it.
    assert receive(hub) == (f"footfall/{SITE}/s1/config", "for s1")
    assert hub.messages.empty()
    # It reads the config topics (to merge its opt-out list into them) and no sensor data.
    sync.subscribe(f"footfall/{SITE}/#")
    s1 = ok(as_user(site_dir, broker.port, "s1", password=None, protocol=mqtt.MQTTv5))
    for kind in ("visit", "health"):
        assert s1.publish(f"footfall/{SITE}/s1/{kind}", f"s1 {kind}").getName() == "Success"
    assert [receive(hub), receive(hub)] == [(f"footfall/{SITE}/s1/visit", "s1 visit"),
                                            (f"footfall/{SITE}/s1/health", "s1 health")]  # fmt: skip
    sync.publish(f"footfall/{SITE}/s2/config", "marker")
    assert receive(sync) == (f"footfall/{SITE}/s2/config", "marker")
    assert sync.messages.empty()
    assert receive(hub) == (f"footfall/{SITE}/s2/config", "marker")  # the hub reads everything
    for c in (s1, sync):
        c.close()
    # Its certificate is its login whatever username it sends: the hub's name buys nothing, and
    # the ingest's connection (same username would mean same client id) is left alone.
    f = bundle_files(site_dir, pv.SYNC_USER)
    posing = ok(connect(broker.port, ca_file=f["ca"], cert=f["cert"], key=f["key"], username=pv.HUB_USER))
    posing.subscribe(f"footfall/{SITE}/#")
    s2 = ok(as_user(site_dir, broker.port, "s2", password=None))
    s2.publish(f"footfall/{SITE}/s2/visit", "s2 visit")
    assert receive(hub) == (f"footfall/{SITE}/s2/visit", "s2 visit")
    posing.publish(f"footfall/{SITE}/s2/config", "marker 2")
    assert receive(posing) == (f"footfall/{SITE}/s2/config", "marker 2")
    assert posing.messages.empty()
    assert receive(hub) == (f"footfall/{SITE}/s2/config", "marker 2")
    assert "already connected" not in broker.log.read_text()
    for c in (s2, posing, hub):
        c.close()
    # The hub ingest, for its part, no longer writes the sensors' config.
    hub5 = ok(as_user(site_dir, broker.port, pv.HUB_USER, password=None, protocol=mqtt.MQTTv5))
    assert hub5.publish(f"footfall/{SITE}/s1/config", "by the hub").getName() == "Not authorized"
    hub5.close()


@needs_broker
def test_sync_publishes_opt_outs_while_the_ingest_stays_connected(
    secure_running: tuple[Path, HubBroker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bug this identity fixes: the opt-out publisher logged in as footfall-hub, which the
    broker (username = client id) answered by disconnecting the running ingest and dropping its
    session. Now: one ingest connection throughout, and every visit sent meanwhile is stored."""
    import logging

    from footfall import schema, topics
    from footfall.cloud_sync import fleet, pushback, pushback_items, sensor_optouts
    from footfall.hub import config as hub_config
    from footfall.hub import store
    from footfall.hub.ingest import Ingestor

    site_dir, broker = secure_running
    db = tmp_path / "hub.db"
    hub_toml = _install_hub_files(site_dir, tmp_path / "etc", db)
    cfg = _sync_config(tmp_path, hub_toml)
    assert cfg.mqtt_username == pv.SYNC_USER and cfg.mqtt_certfile == str(tmp_path / "etc" / f"{pv.SYNC_USER}.crt")
    assert cfg.ingest_mqtt_username == pv.HUB_USER and cfg.ingest_identity_clash() is None
    # Both certificates are watched (/metrics, fleet report): the ingest's as "client".
    certs = dict(fleet.sources(cfg, env={}).certs)
    assert certs["client"].name == f"{pv.HUB_USER}.crt" and certs["sync_client"].name == f"{pv.SYNC_USER}.crt"
    caplog.set_level(logging.INFO, logger="footfall.hub.ingest")
    ingestor = Ingestor(hub_config.load(hub_toml, env={}))
    thread = threading.Thread(target=ingestor.run, daemon=True)
    thread.start()
    s1 = ok(as_user(site_dir, broker.port, "s1", password=None, protocol=mqtt.MQTTv5))
    sent: list[str] = []
    refused: list[object] = []
    stop = threading.Event()

    def sensor() -> None:
        # A sensor sending visits back to back (each acknowledged) while the opt-outs go out.
        while not stop.is_set():
            device = hashlib.sha256(f"visitor {len(sent)}".encode()).hexdigest()
            topic, payload = _visit_message("s1", device, time.time() - 600)
            reason = s1.publish(topic, payload.decode())
            if getattr(reason, "is_failure", True):
                refused.append(reason)
                return
            sent.append(device)

    conn = None
    try:
        assert ingestor.ready.wait(15), broker.log.read_text()[-2000:]
        assert s1.subscribe(topics.topic(SITE, "s1", "config")).value == 1
        sender = threading.Thread(target=sensor, daemon=True)
        sender.start()
        conn = store.connect(db)
        deadline = time.monotonic() + 15
        while not conn.execute("SELECT count(*) FROM sensors WHERE sensor = 's1'").fetchone()[0]:
            assert time.monotonic() < deadline, "ingest stored nothing from s1"
            time.sleep(0.05)
        opted = []
        for i in range(4):
            device = hashlib.sha256(f"opted out {i}".encode()).hexdigest()
            with conn:
                pushback_items.apply_optout(conn, device, ts=time.time(), now=time.time() + i)
            opted.insert(0, device)  # newest first, as the list is sent
            publisher = sensor_optouts.ConfigPublisher(cfg, settle_s=0.2)
            assert sensor_optouts.publish_optouts(conn, cfg, publisher, force=True) >= 1
        stop.set()
        sender.join(10)
        assert not refused, refused
        assert len(sent) > 20, "the sensor hardly sent anything while the opt-outs went out"
        deadline = time.monotonic() + 20
        stored: set[str] = set()
        while len(stored) < len(sent):
            assert time.monotonic() < deadline, f"{len(sent) - len(stored)} of {len(sent)} visits lost"
            time.sleep(0.1)
            stored = {r[0] for r in conn.execute("SELECT device FROM sensor_visits WHERE sensor = 's1'")}
        assert stored == set(sent)
        # The sensor got the whole list in its retained config, from the sync's login.
        configs = []
        while not s1.messages.empty():
            configs.append(s1.messages.get())
        assert configs and schema.validate(configs[-1][1].encode(), "config")["optout"] == opted
        log = broker.log.read_text()
        assert len(re.findall(rf"New client connected from \S+ as {pv.SYNC_USER} ", log)) == 4, log[-3000:]
        # One ingest connection from start to end: never taken over, never reconnected.
        assert len(re.findall(rf"New client connected from \S+ as {pv.HUB_USER} ", log)) == 1, log[-3000:]
        assert "already connected" not in log and f"Client {pv.HUB_USER} disconnected" not in log
        ingest_log = [r.getMessage() for r in caplog.records if r.name == "footfall.hub.ingest"]
        assert len([m for m in ingest_log if m.startswith("connected to")]) == 1, ingest_log
        assert not [m for m in ingest_log if "disconnected" in m], ingest_log
        assert ingestor.ready.is_set()

        # A sync still configured with the ingest's login (a hub.toml from before [sync_mqtt]):
        # the publisher refuses before it connects, rather than push the ingest off.
        old = tmp_path / "old-hub.toml"
        old.write_text(hub_toml.read_text().split("\n[sync_mqtt]\n")[0] + "\n")
        legacy = _sync_config(tmp_path, old, "legacy-sync.toml")
        assert legacy.mqtt_username == pv.HUB_USER and legacy.ingest_identity_clash()
        with pytest.raises(pushback.PushbackError, match="disconnect the running ingest"):
            sensor_optouts.publish_optouts(conn, legacy, sensor_optouts.ConfigPublisher(legacy), force=True)
        assert broker.log.read_text() == log
        # What that login did (the control: the checks above do see a takeover).
        f = bundle_files(site_dir, pv.HUB_USER)
        takeover = ok(connect(broker.port, ca_file=f["ca"], cert=f["cert"], key=f["key"]))
        deadline = time.monotonic() + 10
        while "already connected" not in broker.log.read_text():
            assert time.monotonic() < deadline, broker.log.read_text()[-2000:]
            time.sleep(0.05)
        takeover.close()
    finally:
        stop.set()
        ingestor.stop()
        thread.join(10)
        s1.close()
        if conn is not None:
            conn.close()


def test_provision_hub_gives_an_older_site_the_sync_identity(
    secure_site: tuple[Path, HubBroker], passfile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site.json from before footfall-sync: `provision hub` adds it and changes nothing else."""
    from footfall.hub import config as hub_config
    from footfall.tools.provision.bundle import hub_toml

    site_dir, broker = secure_site
    d, pw = str(site_dir), ["--ca-passphrase-file", str(passfile)]
    raw = json.loads((site_dir / "site.json").read_text())
    del raw["sync"]
    (site_dir / "site.json").write_text(json.dumps(raw))
    for name in (f"{pv.SYNC_USER}.crt", f"{pv.SYNC_USER}.key", "sync-mqtt.pass"):
        (site_dir / "hub" / name).unlink()
    state = pv.load(site_dir)
    (site_dir / "hub" / "hub.toml").write_text(hub_toml(SITE, pv.HUB_USER, state.broker["port"], "/etc/footfall"))
    pv.render_broker(site_dir, state)
    assert pv.SYNC_USER not in (site_dir / "broker" / "acl").read_text()
    before = pv.load(site_dir)
    hub_files = {p.name: p.read_bytes() for p in (site_dir / "hub").iterdir() if p.name != "hub.toml"}
    s1_files = {p.name: p.read_bytes() for p in (site_dir / "sensors" / "s1").iterdir()}
    broker.start()
    old_hub = hub_listening(site_dir, broker.port)
    capsys.readouterr()
    assert run_cli("list", "--dir", d) == 0
    assert f"{pv.SYNC_USER}: not issued" in capsys.readouterr().out

    assert run_cli("rotate", "--dir", d, *pw, pv.SYNC_USER) == 2  # nothing to rotate yet
    assert "`footfall provision hub` issues it" in capsys.readouterr().err
    # Issuing it needs the CA key: without the passphrase it says why and changes nothing.
    assert run_cli("hub", "--dir", d) == 2
    err = capsys.readouterr().err
    assert pv.SYNC_USER in err and "passphrase" in err
    assert pv.load(site_dir) == before
    assert run_cli("hub", "--dir", d, *pw) == 0
    out = capsys.readouterr().out
    assert f"issued {pv.SYNC_USER}" in out and "[sync_mqtt]" in out
    after = pv.load(site_dir)
    assert after.sync["username"] == pv.SYNC_USER
    assert ca.common_name(ca.load_cert((site_dir / "hub" / f"{pv.SYNC_USER}.crt").read_bytes())) == pv.SYNC_USER
    # Nothing else was re-issued: the hub's and the sensors' credentials, the CA and CRL stand.
    assert (after.ca, after.server, after.hub, after.sensors, after.revoked, after.crl) == (
        before.ca, before.server, before.hub, before.sensors, before.revoked, before.crl)  # fmt: skip
    assert all((site_dir / "hub" / n).read_bytes() == b for n, b in hub_files.items())
    assert {p.name: p.read_bytes() for p in (site_dir / "sensors" / "s1").iterdir()} == s1_files
    hub = hub_config.load(site_dir / "hub" / "hub.toml", env={})
    assert hub.mqtt.username == pv.HUB_USER and hub.sync_mqtt.username == pv.SYNC_USER
    assert f"user {pv.SYNC_USER}\ntopic readwrite footfall/{SITE}/+/config\n" in (site_dir / "broker/acl").read_text()
    # Deployed with a reload: the old clients carry on, the new identity logs in.
    broker.reload()
    sync = ok(as_user(site_dir, broker.port, pv.SYNC_USER, password=None, protocol=mqtt.MQTTv5))
    assert sync.publish(f"footfall/{SITE}/s1/config", "hello").getName() == "Success"
    assert receive(old_hub) == (f"footfall/{SITE}/s1/config", "hello")
    s1 = ok(as_user(site_dir, broker.port, "s1", password=None))
    s1.publish(f"footfall/{SITE}/s1/visit", "still works")
    assert receive(old_hub) == (f"footfall/{SITE}/s1/visit", "still works")
    sync.close()
    s1.close()
    # Once issued, `provision hub` needs no CA key again, and keeps the identity.
    assert run_cli("hub", "--dir", d) == 0
    assert pv.load(site_dir).sync == after.sync
    assert "issued" not in capsys.readouterr().out

    # `provision rotate footfall-sync`: the superseded certificate goes into the CRL.
    old = tmp_path / "old-sync"
    old.mkdir()
    for name in ("ca.pem", f"{pv.SYNC_USER}.crt", f"{pv.SYNC_USER}.key"):
        shutil.copyfile(site_dir / "hub" / name, old / name)
    assert run_cli("rotate", "--dir", d, *pw, pv.SYNC_USER) == 0
    assert "sync-mqtt.pass" in capsys.readouterr().out
    rotated = pv.load(site_dir)
    assert rotated.sync["cert"]["serial"] != after.sync["cert"]["serial"]
    assert rotated.revoked[-1]["serial"] == after.sync["cert"]["serial"] and rotated.hub == before.hub
    broker.reload()
    refused = connect(
        broker.port, ca_file=str(old / "ca.pem"), cert=str(old / f"{pv.SYNC_USER}.crt"),
        key=str(old / f"{pv.SYNC_USER}.key"),
    )  # fmt: skip
    assert isinstance(refused, str), refused
    ok(as_user(site_dir, broker.port, pv.SYNC_USER, password=None)).close()
    old_hub.close()
    assert run_cli("list", "--dir", d) == 0
    assert pv.SYNC_USER in capsys.readouterr().out


# -- existing sites and the opt-out ----------------------------------------------------------------


def test_no_mtls_is_an_explicit_opt_out_and_old_sites_keep_their_mode(tmp_path: Path, passfile: Path) -> None:
    d = tmp_path / "legacy"
    assert (
        run_cli("init-site", "--dir", str(d), "--site", SITE, "--host", "hub", "--no-mtls", "--no-ca-passphrase") == 0
    )
    conf = (d / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate false" in conf and "use_identity_as_username" not in conf
    assert not pv.load(d).broker["use_identity_as_username"]
    # A site.json written before these options existed: no cipher setting, mutual TLS off.
    state = pv.load(d)
    state.broker.pop("ciphers")
    state.hash_key = {}
    save(d, state)
    assert run_cli("hub", "--dir", str(d), "--port", "9883") == 0
    conf = (d / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate false" in conf and "listener 9883" in conf  # its mode is kept...
    assert f"ciphers {mosquitto.TLS12_CIPHERS}" in conf  # ...and it gets the modern cipher list
    assert run_cli("list", "--dir", str(d)) == 0
    # Turning mutual TLS on later ties certificates to usernames too, unless told otherwise.
    assert run_cli("hub", "--dir", str(d), "--mtls") == 0
    assert pv.load(d).broker["use_identity_as_username"] is True
    assert run_cli("hub", "--dir", str(d), "--no-mtls") == 0
    assert pv.load(d).broker["use_identity_as_username"] is False
    assert run_cli("hub", "--dir", str(d), "--mtls", "--no-identity-as-username") == 0
    broker = pv.load(d).broker
    assert broker["require_certificate"] is True and broker["use_identity_as_username"] is False
    assert "not tied together" in (d / "broker" / "mosquitto.conf").read_text()


# -- 2. the CA key is encrypted unless told otherwise ----------------------------------------------


def test_init_site_requires_a_ca_passphrase_or_an_explicit_no(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def init(name: str, *extra: str) -> int:
        return run_cli("init-site", "--dir", str(tmp_path / name), "--site", SITE, "--host", "hub", *extra)

    capsys.readouterr()
    assert init("none") == 2
    err = capsys.readouterr().err
    assert "--ca-passphrase-file" in err and PASSPHRASE_ENV in err and "--no-ca-passphrase" in err
    assert not (tmp_path / "none").exists()  # refused before anything was written
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert init("empty", "--ca-passphrase-file", str(empty)) == 2
    assert "is empty" in capsys.readouterr().err
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    assert init("short", "--ca-passphrase-file", str(short)) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    assert init("missing", "--ca-passphrase-file", str(tmp_path / "nope")) == 2
    assert "nope" in capsys.readouterr().err
    assert init("both", "--ca-passphrase-file", str(passfile), "--no-ca-passphrase") == 2
    assert "contradicts" in capsys.readouterr().err

    assert init("plain", "--no-ca-passphrase") == 0
    assert b"ENCRYPTED" not in (tmp_path / "plain" / "ca" / "ca.key").read_bytes()
    assert "NOT encrypted" in capsys.readouterr().out

    assert init("file", "--ca-passphrase-file", str(passfile)) == 0
    key = (tmp_path / "file" / "ca" / "ca.key").read_bytes()
    assert b"ENCRYPTED" in key and PASSPHRASE.encode() not in key
    ca.load_key(key, PASSPHRASE.encode())  # the passphrase is the file's content, newline stripped
    # Later steps need it too, and say how to give it.
    capsys.readouterr()
    assert run_cli("add-sensor", "--dir", str(tmp_path / "file"), "s1") == 2
    err = capsys.readouterr().err
    assert "encrypted" in err and "--ca-passphrase-file" in err and PASSPHRASE_ENV in err
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    assert run_cli("add-sensor", "--dir", str(tmp_path / "file"), "s1", "--ca-passphrase-file", str(wrong)) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    assert run_cli("add-sensor", "--dir", str(tmp_path / "file"), "s1", "--ca-passphrase-file", str(passfile)) == 0

    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    assert init("env") == 0
    assert b"ENCRYPTED" in (tmp_path / "env" / "ca" / "ca.key").read_bytes()
    assert run_cli("add-sensor", "--dir", str(tmp_path / "env"), "s1") == 0
    assert init("env-and-no", "--no-ca-passphrase") == 2


# -- 3. modern TLS ---------------------------------------------------------------------------------


def _handshake(port: int, bundle: dict[str, str], ciphers: str | None, version: ssl.TLSVersion) -> str:
    """The negotiated suite, or the error that ended the handshake (with the sensor's certificate)."""
    ctx = ssl.create_default_context(cafile=bundle["ca"])
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    ctx.load_cert_chain(bundle["cert"], bundle["key"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.cipher()[0]
    except ssl.SSLError as exc:
        return f"refused: {exc.reason}"


@needs_broker
def test_tls12_takes_only_ecdhe_aead_suites(secure_running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = secure_running
    s1 = bundle_files(site_dir, "s1")
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    for cbc in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256"):
        assert _handshake(broker.port, s1, cbc, v12).startswith("refused"), cbc
    assert "no shared cipher" in broker.log.read_text()
    for aead in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"):
        assert _handshake(broker.port, s1, aead, v12) == aead
    assert _handshake(broker.port, s1, None, v13).startswith("TLS_")
    # Control: the same broker without the ciphers line takes the CBC-SHA1 suite, so the refusal
    # above is the ciphers line's doing.
    broker.stop()
    conf = site_dir / "broker" / "mosquitto.conf"
    conf.write_text("".join(line for line in conf.read_text().splitlines(True) if not line.startswith("ciphers ")))
    broker.start()
    assert _handshake(broker.port, s1, "ECDHE-ECDSA-AES128-SHA", v12) == "ECDHE-ECDSA-AES128-SHA"


def test_rsa_sites_get_the_rsa_aead_suites(tmp_path: Path) -> None:
    pv.init_site(tmp_path / "rsa", SITE, ["hub"], key_type="rsa")
    line = next(x for x in (tmp_path / "rsa/broker/mosquitto.conf").read_text().splitlines() if x.startswith("ciphers"))
    suites = line.split()[1].split(":")
    assert "ECDHE-RSA-AES128-GCM-SHA256" in suites and "ECDHE-ECDSA-AES128-GCM-SHA256" in suites
    assert all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA20" in s) for s in suites), suites


# -- 4. the CRL renewal timer ----------------------------------------------------------------------


def _crl_next_update(site_dir: Path) -> str:
    return pv.load(site_dir).crl["next_update"]


def test_crl_if_expiring_within_is_a_no_op_until_needed(
    secure_site: tuple[Path, HubBroker], passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_dir, _ = secure_site
    d = str(site_dir)
    crl = site_dir / "broker" / "crl.pem"
    before, before_pem = _crl_next_update(site_dir), crl.read_bytes()
    capsys.readouterr()
    # 365 days left: nothing to do, and not even the passphrase is needed for that.
    assert run_cli("crl", "--dir", d, "--if-expiring-within", "60") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _crl_next_update(site_dir) == before and crl.read_bytes() == before_pem
    # Re-signed for 45 days, a 60-day threshold renews it to a full year again.
    assert run_cli("crl", "--dir", d, "--days", "45", "--ca-passphrase-file", str(passfile)) == 0
    assert 44 < pv.crl_days_left(pv.load(site_dir)) < 46
    assert run_cli("crl", "--dir", d, "--if-expiring-within", "30") == 0  # 45 > 30: still nothing
    assert 44 < pv.crl_days_left(pv.load(site_dir)) < 46
    capsys.readouterr()
    assert run_cli("crl", "--dir", d, "--if-expiring-within", "60", "--ca-passphrase-file", str(passfile)) == 0
    assert "CRL re-signed" in capsys.readouterr().out
    assert 364 < pv.crl_days_left(pv.load(site_dir)) < 366
    # Renewing needs the CA key: without the passphrase it says so and changes nothing.
    assert run_cli("crl", "--dir", d, "--days", "45", "--ca-passphrase-file", str(passfile)) == 0
    pem = crl.read_bytes()
    assert run_cli("crl", "--dir", d, "--if-expiring-within", "60") == 2
    assert "passphrase" in capsys.readouterr().err and crl.read_bytes() == pem
    # Thresholds that make no sense are refused.
    assert run_cli("crl", "--dir", d, "--if-expiring-within", "-1") == 2
    assert "0 days or more" in capsys.readouterr().err
    assert run_cli("crl", "--dir", d, "--if-expiring-within", "365", "--ca-passphrase-file", str(passfile)) == 2
    assert "less than the new CRL's lifetime" in capsys.readouterr().err
    assert crl.read_bytes() == pem


def _unit(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def test_crl_renewal_units_are_valid_and_hardened(tmp_path: Path) -> None:
    service, timer = _unit("footfall-crl-renew.service"), _unit("footfall-crl-renew.timer")
    assert timer["Timer.OnCalendar"] == ["daily"] and timer["Timer.Persistent"] == ["yes"]
    assert timer["Install.WantedBy"] == ["timers.target"]
    assert service["Service.Type"] == ["oneshot"]
    (start,) = service["Service.ExecStart"]
    assert start.startswith(f"{INSTALLED_FOOTFALL} provision crl --if-expiring-within ")
    assert "--ca-passphrase-file %d/" in start  # a systemd credential, never a command-line secret
    post = service["Service.ExecStartPost"]
    assert any("/etc/mosquitto/footfall/crl.pem" in p for p in post) and any("/etc/footfall/crl.pem" in p for p in post)
    assert post[-1].endswith("systemctl reload mosquitto.service")
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateNetwork": "yes"}.items():
        assert service[f"Service.{key}"] == [value], key
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    stub = tmp_path / "bin" / "footfall"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in ("footfall-crl-renew.service", "footfall-crl-renew.timer"):
        (tmp_path / name).write_text((UNITS / name).read_text().replace(INSTALLED_FOOTFALL, str(stub)))
    r = subprocess.run(
        [analyze, "verify", "footfall-crl-renew.service", "footfall-crl-renew.timer"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    if r.returncode != 0 and "Failed to" in r.stderr and "bus" in r.stderr.lower():
        pytest.skip(f"systemd-analyze verify does not run here: {r.stderr[:200]}")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = subprocess.run(
        [analyze, "security", "--offline=true", str(tmp_path / "footfall-crl-renew.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    if m:
        assert float(m.group(1)) < 2.5, r.stdout


@needs_broker
def test_the_timer_command_renews_what_the_broker_then_loads(
    secure_running: tuple[Path, HubBroker], passfile: Path, tmp_path: Path
) -> None:
    """The unit's own ExecStart line, run as systemd would (credential directory for %d)."""
    site_dir, broker = secure_running
    assert run_cli("crl", "--dir", str(site_dir), "--days", "40", "--ca-passphrase-file", str(passfile)) == 0
    creds = tmp_path / "credentials"
    creds.mkdir()
    shutil.copyfile(passfile, creds / "ca-passphrase")
    (start,) = _unit("footfall-crl-renew.service")["Service.ExecStart"]
    argv = start.replace("%d", str(creds)).split()
    assert argv[0] == INSTALLED_FOOTFALL
    env = {**os.environ, "FOOTFALL_SITE_DIR": str(site_dir)}
    r = subprocess.run([sys.executable, "-m", "footfall", *argv[1:]], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "CRL re-signed" in r.stdout, r.stderr
    assert pv.crl_days_left(pv.load(site_dir)) > 364
    r = subprocess.run([sys.executable, "-m", "footfall", *argv[1:]], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr
    # ExecStartPost: the new CRL installed and Mosquitto reloaded; sensors carry on.
    broker.reload()
    ok(as_user(site_dir, broker.port, "s1", password=None)).close()


# -- 5. rotating the device-id key -----------------------------------------------------------------


def test_rotate_hash_key_reissues_every_sensor_with_a_new_key(
    secure_site: tuple[Path, HubBroker], passfile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_dir, _ = secure_site
    d = str(site_dir)
    pw = ["--ca-passphrase-file", str(passfile)]
    assert run_cli("add-sensor", "--dir", d, *pw, "s3", "--platform", "openwrt") == 0
    assert run_cli("add-sensor", "--dir", d, *pw, "s4") == 0
    assert run_cli("revoke", "--dir", d, *pw, "s4", "--reason", "stolen") == 0
    old_key = (site_dir / "ca" / "hash.key").read_text().strip()
    old = {s: steal(site_dir, s, tmp_path / f"old-{s}") for s in ("s1", "s2", "s3")}
    old_serials = {s: pv.load(site_dir).sensors[s]["cert"]["serial"] for s in old}
    assert pv.load(site_dir).hash_key["source"] == "site"
    capsys.readouterr()

    assert run_cli("rotate-hash-key", "--dir", d, *pw) == 0
    out = capsys.readouterr().out
    assert "3 sensor bundle(s) re-issued" in out and "new id" in out and "opt-outs" in out
    new_key = (site_dir / "ca" / "hash.key").read_text().strip()
    assert new_key != old_key and len(bytes.fromhex(new_key)) == 32
    state = pv.load(site_dir)
    for sensor in ("s1", "s2", "s3"):
        bundle = site_dir / "sensors" / sensor
        assert (bundle / "hash.key").read_text().strip() == new_key
        assert (bundle / "mqtt.pass").read_text().strip() != old[sensor]["password"]
        assert state.sensors[sensor]["cert"]["serial"] != old_serials[sensor]
        # The superseded certificate is in the CRL: a bundle left behind cannot connect.
        assert any(r["serial"] == old_serials[sensor] and r["reason"] == "superseded" for r in state.revoked)
        for f in bundle.iterdir():
            assert f.stat().st_mode & 0o777 == 0o600, f
    assert tomllib.loads((site_dir / "sensors/s3/agent.toml").read_text())["capture"]["channels"] == []  # kept
    assert not (site_dir / "sensors" / "s4").exists() and state.sensors["s4"]["status"] == "revoked"
    assert state.crl["entries"] == 4  # s4 stolen + three superseded
    assert state.hash_key["source"] == "site" and state.hash_key["history"][0]["source"] == "site"
    assert new_key not in (site_dir / "site.json").read_text()
    # What it means for the data: the same phone is another device id from now on.
    mac = bytes.fromhex("a4b1c2d3e4f5")
    assert Identifier(bytes.fromhex(old_key)).device_id(mac) != Identifier(bytes.fromhex(new_key)).device_id(mac)

    # A chain-wide key given by the chain; the same key twice, or garbage, is refused.
    chain = tmp_path / "chain.key"
    chain.write_text("c4" * 32 + "\n")
    assert run_cli("rotate-hash-key", "--dir", d, *pw, "--hash-key-file", str(chain)) == 0
    assert (site_dir / "sensors/s1/hash.key").read_text().strip() == "c4" * 32
    assert pv.load(site_dir).hash_key["source"] == "chain" and len(pv.load(site_dir).hash_key["history"]) == 2
    capsys.readouterr()
    assert run_cli("rotate-hash-key", "--dir", d, *pw, "--hash-key-file", str(chain)) == 2
    assert "current hash key" in capsys.readouterr().err
    chain.write_text("not hex\n")
    assert run_cli("rotate-hash-key", "--dir", d, *pw, "--hash-key-file", str(chain)) == 2
    assert "hex digits" in capsys.readouterr().err
    # Without the CA passphrase nothing changes (the key is not half-rotated).
    assert run_cli("rotate-hash-key", "--dir", d) == 2
    assert (site_dir / "ca" / "hash.key").read_text().strip() == "c4" * 32
    assert run_cli("list", "--dir", d) == 0
    assert "device-id key: chain" in capsys.readouterr().out


@needs_broker
def test_after_rotate_hash_key_only_the_new_bundles_connect(
    secure_running: tuple[Path, HubBroker], passfile: Path, tmp_path: Path
) -> None:
    site_dir, broker = secure_running
    old = steal(site_dir, "s1", tmp_path / "old-s1")
    assert run_cli("rotate-hash-key", "--dir", str(site_dir), "--ca-passphrase-file", str(passfile)) == 0
    broker.reload()
    assert isinstance(connect(broker.port, ca_file=old["ca"], cert=old["cert"], key=old["key"]), str)
    c = ok(as_user(site_dir, broker.port, "s1", password=None))
    assert isinstance(c, Client)
    c.close()


# -- 6. no secret on a command line ----------------------------------------------------------------


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for path, a in _options(sub):
                    yield f"{name} {path}", a
        elif action.option_strings:
            yield "", action


def test_no_provision_option_takes_a_secret_value() -> None:
    parser = argparse.ArgumentParser(prog="footfall")
    register_provision(parser.add_subparsers(dest="command"))
    secretish = re.compile(r"pass|secret|token|key|pw", re.I)
    seen = set()
    for where, action in _options(parser):
        for opt in action.option_strings:
            seen.add(opt)
            if not secretish.search(opt) or opt in ("--key-type",) or action.nargs == 0:
                continue
            # Secrets come in files (or the environment); a --...-file option names a path.
            assert opt.endswith("-file") or opt.endswith("keyfile"), f"{where}{opt} takes a value on the command line"
    assert {"--ca-passphrase-file", "--hash-key-file", "--bridge-password-file"} <= seen


def _guide_code_blocks() -> str:
    lines, inside = [], False
    for line in GUIDE.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return "\n".join(lines)


def test_the_operator_guide_puts_no_secret_on_a_command_line() -> None:
    code = _guide_code_blocks()
    assert code
    # mosquitto_pub/sub -P, a --password VALUE, or a secret file read into an argument.
    assert not re.search(r"(^|\s)-P\s", code), re.search(r".*\s-P\s.*", code).group(0)
    assert not re.search(r"--(password|passphrase|pw)[ =]", code)
    assert not re.search(r"\$\(\s*(sudo\s+)?cat\s+[^)]*(pass|key)", code)
