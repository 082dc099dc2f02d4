"""``footfall provision`` against the real Mosquitto: the generated config must keep strangers out.

Each broker here runs ``mosquitto -c <generated mosquitto.conf>`` unchanged, after the broker
files are installed the way the operator guide installs them (root:mosquitto 0640 when we run
as root, because Mosquitto drops to its own user before it reads passwd and acl).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from footfall.tools import provision as pv
from footfall.tools.provision import ca, mosquitto
from tests.conftest import free_port, wait_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SITE = "store-042"
needs_broker = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed")


# -- the broker, installed and run as on a hub ---------------------------------------------------


@dataclass
class HubBroker:
    site_dir: Path
    install_dir: Path
    port: int
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.install_dir.parent / "mosquitto.log"

    def install(self) -> None:
        """What docs/operator-guide.md does: copy broker/ to its place, readable by group mosquitto."""
        as_root = os.geteuid() == 0
        for src in (self.site_dir / "broker").iterdir():
            dst = self.install_dir / src.name
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o640)
            if as_root:
                shutil.chown(dst, "root", "mosquitto")

    def start(self) -> None:
        self.install()
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the broker process
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.install_dir / "mosquitto.conf")], stdout=out, stderr=out
        )
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start:\n{self.log.read_text()}") from None

    def reload(self) -> None:
        """Install the new files, SIGHUP, and wait until the broker says it re-read its config."""
        self.install()
        before = self.log.read_text().count("Reloading config")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log.read_text().count("Reloading config") <= before:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _install_root() -> Path:
    # Not under pytest's tmp_path: that is 0700 root, and the broker runs as user mosquitto.
    root = Path(tempfile.mkdtemp(prefix="footfall-broker-"))
    os.chmod(root, 0o755)
    for sub in ("etc", "data"):
        (root / sub).mkdir()
        os.chmod(root / sub, 0o750)
        if os.geteuid() == 0:
            shutil.chown(root / sub, "root" if sub == "etc" else "mosquitto", "mosquitto")
    return root


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, HubBroker]]:
    """A provisioned site (hub + sensors s1, s2) and its broker, not yet started.

    Passwords only (`init-site --no-mtls`, the mode kept for old clients), so that the password
    checks below are what refuses; mutual TLS, the default, is tested in test_provision_secure.py.
    """
    root = _install_root()
    port = free_port()
    site_dir = tmp_path / "site"
    cfg = pv.BrokerConfig(
        install_dir=str(root / "etc"),
        port=port,
        bind="127.0.0.1",
        persistence_location=f"{root}/data/",
        log_dest=["stderr"],
        require_certificate=False,
        use_identity_as_username=False,
    )
    pv.init_site(site_dir, SITE, ["hub.store-042.example"], broker=cfg)
    pv.add_sensor(site_dir, "s1")
    pv.add_sensor(site_dir, "s2")
    broker = HubBroker(site_dir, root / "etc", port)
    yield site_dir, broker
    broker.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def running(site: tuple[Path, HubBroker]) -> tuple[Path, HubBroker]:
    site[1].start()
    return site


# -- MQTT clients over TLS -------------------------------------------------------------------------


@dataclass
class Client:
    client: mqtt.Client
    messages: queue.Queue = field(default_factory=queue.Queue)
    acks: dict[int, object] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)

    def subscribe(self, pattern: str) -> object:
        got: queue.Queue = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, props: got.put(codes[0])
        self.client.subscribe(pattern, qos=1)
        return got.get(timeout=5)

    def publish(self, topic: str, payload: str) -> object:
        """QoS 1 publish; returns the PUBACK reason code once the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, timeout=5), "no PUBACK"
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bundle_files(site_dir: Path, who: str) -> dict[str, str]:
    # The hub's bundle holds two identities: ingest's and the sync job's.
    d = site_dir / ("hub" if who in mosquitto.SERVICE_USERS else f"sensors/{who}")
    password = {mosquitto.HUB_USER: "hub-mqtt.pass", mosquitto.SYNC_USER: "sync-mqtt.pass"}.get(who, "mqtt.pass")
    return {
        "ca": str(d / "ca.pem"),
        "cert": str(d / f"{who}.crt"),
        "key": str(d / f"{who}.key"),
        "password": (d / password).read_text().strip(),
    }


def steal(site_dir: Path, who: str, dest: Path) -> dict[str, str]:
    """A copy of a sensor's bundle as the device (or a thief) keeps it after revocation."""
    shutil.copytree(site_dir / "sensors" / who, dest)
    return {
        "ca": str(dest / "ca.pem"),
        "cert": str(dest / f"{who}.crt"),
        "key": str(dest / f"{who}.key"),
        "password": (dest / "mqtt.pass").read_text().strip(),
    }


def connect(
    port: int,
    *,
    ca_file: str,
    username: str | None = None,
    password: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    protocol: int = mqtt.MQTTv311,
    client_id: str = "",
) -> Client | str:
    """A connected client, or a string saying how the broker refused us."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    c.tls_set(ca_certs=ca_file, certfile=cert, keyfile=key)
    if username is not None:
        c.username_pw_set(username, password)
    wrapper = Client(c)
    outcome: queue.Queue = queue.Queue()
    c.on_connect = lambda cl, u, flags, rc, props: outcome.put(rc)
    c.on_disconnect = lambda cl, u, flags, rc, props: outcome.put(f"disconnected: {rc}")
    c.on_message = lambda cl, u, msg: wrapper.messages.put((msg.topic, msg.payload.decode()))

    def on_publish(cl, u, mid, rc, props) -> None:
        with wrapper.acked:
            wrapper.acks[mid] = rc
            wrapper.acked.notify_all()

    c.on_publish = on_publish
    try:
        c.connect("127.0.0.1", port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return f"tls refused: {exc}"
    c.loop_start()
    try:
        rc = outcome.get(timeout=5)
    except queue.Empty:
        rc = "no CONNACK"
    if isinstance(rc, str) or rc.is_failure:
        c.loop_stop()
        c.disconnect()
        return f"refused: {rc}"
    return wrapper


def as_user(site_dir: Path, port: int, who: str, **overrides) -> Client | str:
    f = bundle_files(site_dir, who)
    args = {"ca_file": f["ca"], "username": who, "password": f["password"], "cert": f["cert"], "key": f["key"]}
    args.update(overrides)
    return connect(port, **args)


def ok(result: Client | str) -> Client:
    assert isinstance(result, Client), result
    return result


def hub_listening(site_dir: Path, port: int) -> Client:
    hub = ok(as_user(site_dir, port, mosquitto.HUB_USER))
    assert hub.subscribe(f"footfall/{SITE}/#").value == 1  # granted QoS 1
    return hub


def receive(c: Client, timeout: float = 5.0) -> tuple[str, str]:
    return c.messages.get(timeout=timeout)


# -- pure parts ------------------------------------------------------------------------------------


def test_password_hash_is_mosquitto_passwd_format(tmp_path: Path) -> None:
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.skip("mosquitto_passwd is not installed")
    pw = tmp_path / "pw"
    subprocess.run([exe, "-c", "-b", str(pw), "u", "s3cret pass"], check=True, capture_output=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert mosquitto.verify_password("s3cret pass", theirs)
    assert not mosquitto.verify_password("s3cret pas", theirs)
    # Same salt, same bytes: our encoder is mosquitto_passwd's, not merely compatible.
    import base64

    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto.hash_password("s3cret pass", salt=salt) == theirs


def test_site_files_secrets_and_state(site: tuple[Path, HubBroker]) -> None:
    site_dir, _ = site
    bundle = site_dir / "sensors" / "s1"
    for f in bundle.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert (site_dir / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    conf = tomllib.loads((bundle / "agent.toml").read_text())
    assert conf["site"] == SITE and conf["sensor"] == "s1"
    assert conf["mqtt"]["username"] == "s1" and conf["mqtt"]["port"] == pv.load(site_dir).broker["port"]
    assert conf["mqtt"]["certfile"] == "/etc/footfall/s1.crt" and conf["hash_key_file"] == "/etc/footfall/hash.key"
    assert len(bytes.fromhex((bundle / "hash.key").read_text())) == 32
    cert = ca.load_cert((bundle / "s1.crt").read_bytes())
    assert ca.common_name(cert) == "s1"
    state = pv.load(site_dir)
    assert state.sensors["s1"]["cert"]["serial"] == f"{cert.serial_number:x}"
    # The state file names what was issued, never a key or a password.
    text = (site_dir / "site.json").read_text()
    assert "PRIVATE KEY" not in text and (bundle / "mqtt.pass").read_text().strip() not in text
    acl = (site_dir / "broker" / "acl").read_text()
    assert f"topic read footfall/{SITE}/s1/config" in acl and f"topic write footfall/{SITE}/s1/config" not in acl
    # The sync job has its own user, limited to the sensors' config; the hub ingest only reads.
    assert f"user {mosquitto.SYNC_USER}\ntopic readwrite footfall/{SITE}/+/config\n\n" in acl
    assert f"user {mosquitto.HUB_USER}\ntopic read footfall/{SITE}/#\n\n" in acl
    passwd = (site_dir / "broker" / "passwd").read_text()
    assert [line.split(":")[0] for line in passwd.splitlines()] == [mosquitto.HUB_USER, mosquitto.SYNC_USER, "s1", "s2"]
    sync_password = bundle_files(site_dir, mosquitto.SYNC_USER)["password"]
    assert mosquitto.verify_password(sync_password, pv.load(site_dir).sync["password_hash"])
    assert ca.common_name(ca.load_cert((site_dir / "hub" / "footfall-sync.crt").read_bytes())) == "footfall-sync"
    # The bundles load with the agent's and the hub's own config readers.
    from footfall.edge_agent.config import AgentConfig
    from footfall.hub import config as hub_config

    agent = AgentConfig.load(bundle / "agent.toml")
    assert agent.sensor == "s1" and agent.mqtt.certfile == "/etc/footfall/s1.crt" and agent.channels == [1, 6, 11]
    hub = hub_config.load(site_dir / "hub" / "hub.toml", env={})
    assert hub.site == SITE and hub.mqtt.tls and hub.mqtt.username == mosquitto.HUB_USER
    assert hub.sync_mqtt.username == mosquitto.SYNC_USER
    assert hub.sync_mqtt.certfile == "/etc/footfall/footfall-sync.crt"
    assert hub.sync_mqtt.password_file == "/etc/footfall/sync-mqtt.pass"
    with pytest.raises(pv.ProvisionError):
        pv.add_sensor(site_dir, "s1")
    for service in mosquitto.SERVICE_USERS:
        with pytest.raises(pv.ProvisionError, match="hub's MQTT users"):
            pv.add_sensor(site_dir, service)
    with pytest.raises(pv.ProvisionError):
        pv.init_site(site_dir, SITE, ["x"])
    with pytest.raises(ValueError):
        pv.add_sensor(site_dir, "bad/id")


def test_encrypted_ca_key_needs_its_passphrase(tmp_path: Path) -> None:
    pv.init_site(tmp_path / "s", SITE, ["hub"], passphrase=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / "s" / "ca" / "ca.key").read_bytes()
    with pytest.raises(pv.ProvisionError, match="encrypted: give its passphrase"):
        pv.add_sensor(tmp_path / "s", "s1")
    with pytest.raises(ValueError):
        pv.add_sensor(tmp_path / "s", "s1", passphrase=b"wrong")
    assert (pv.add_sensor(tmp_path / "s", "s1", passphrase=b"correct horse") / "s1.key").exists()


# -- the real broker -------------------------------------------------------------------------------


@needs_broker
def test_sensor_publishes_and_hub_receives(running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = running
    # Exactly one listener, ours (a listener option misplaced in the file opens a default 1883 one).
    ports = re.findall(r"listen socket on port (\d+)", broker.log.read_text())
    assert ports and set(ports) == {str(broker.port)}, broker.log.read_text()
    hub = hub_listening(site_dir, broker.port)
    s1 = ok(as_user(site_dir, broker.port, "s1"))
    assert not s1.publish(f"footfall/{SITE}/s1/visit", '{"v": 1}').is_failure
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", '{"v": 1}')
    # The sync writes a sensor's config; that sensor (only) reads it.
    assert s1.subscribe(f"footfall/{SITE}/s1/config").value == 1
    sync = ok(as_user(site_dir, broker.port, mosquitto.SYNC_USER))
    sync.publish(f"footfall/{SITE}/s1/config", '{"inside_rssi": -65}')
    assert receive(s1) == (f"footfall/{SITE}/s1/config", '{"inside_rssi": -65}')
    for c in (s1, sync, hub):
        c.close()


@needs_broker
@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_anonymous_and_wrong_password_refused(running: tuple[Path, HubBroker], protocol: int) -> None:
    site_dir, broker = running
    f = bundle_files(site_dir, "s1")
    anonymous = connect(broker.port, ca_file=f["ca"], protocol=protocol)
    assert isinstance(anonymous, str) and "refused" in anonymous, anonymous
    wrong = connect(broker.port, ca_file=f["ca"], username="s1", password=f["password"] + "x", protocol=protocol)
    assert isinstance(wrong, str) and "refused" in wrong, wrong
    # s2's password is not s1's.
    other = connect(broker.port, ca_file=f["ca"], username="s1", password=bundle_files(site_dir, "s2")["password"])
    assert isinstance(other, str), other
    stranger = connect(broker.port, ca_file=f["ca"], username="mallory", password="x", protocol=protocol)
    assert isinstance(stranger, str), stranger


@needs_broker
def test_broker_certificate_is_checked_by_clients(running: tuple[Path, HubBroker], tmp_path: Path) -> None:
    """A client that trusts another CA does not talk to our broker (and vice versa)."""
    site_dir, broker = running
    other = pv.init_site(tmp_path / "other", "other", ["127.0.0.1"])
    assert other.ca["sha256"] != pv.load(site_dir).ca["sha256"]
    f = bundle_files(site_dir, "s1")
    result = connect(broker.port, ca_file=str(tmp_path / "other/ca/ca.pem"), username="s1", password=f["password"])
    assert isinstance(result, str) and "tls" in result, result


@needs_broker
def test_sensor_cannot_kick_the_hub_off_with_its_client_id(running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = running
    hub = hub_listening(site_dir, broker.port)
    # Without use_username_as_clientid, this would disconnect the hub (same client id).
    s1 = ok(as_user(site_dir, broker.port, "s1", client_id=mosquitto.HUB_USER))
    s1.publish(f"footfall/{SITE}/s1/visit", "still here")
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", "still here")
    assert "use_username_as_clientid true" in (site_dir / "broker" / "mosquitto.conf").read_text()
    s1.close()
    hub.close()


@needs_broker
def test_sensor_cannot_publish_as_another_sensor_v311(running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = running
    hub = hub_listening(site_dir, broker.port)
    s1 = ok(as_user(site_dir, broker.port, "s1"))
    # MQTT 3.1.1 has no way to say "denied": the broker acks and silently drops.
    s1.publish(f"footfall/{SITE}/s2/visit", "forged")
    s1.publish(f"footfall/{SITE}/s1/config", "self-config")
    # One client's QoS 1 messages are delivered in order, so once this arrives the forged one
    # would have arrived before it: no sleeping and hoping.
    s1.publish(f"footfall/{SITE}/s1/visit", "marker")
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", "marker")
    assert hub.messages.empty()
    s1.close()
    hub.close()


@needs_broker
def test_sensor_cannot_publish_or_read_as_another_sensor_v5(running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = running
    hub = hub_listening(site_dir, broker.port)
    s1 = ok(as_user(site_dir, broker.port, "s1", protocol=mqtt.MQTTv5))
    denied = s1.publish(f"footfall/{SITE}/s2/visit", "forged")
    assert denied.is_failure and denied.getName() == "Not authorized", denied
    assert s1.publish(f"footfall/{SITE}/other-site-probe/visit", "x").getName() == "Not authorized"
    assert s1.publish("footfall/store-043/s1/visit", "x").getName() == "Not authorized"
    assert s1.publish(f"footfall/{SITE}/s1/visit", "mine").getName() == "Success"
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", "mine")
    assert hub.messages.empty()
    s1.close()
    hub.close()


@needs_broker
def test_sensor_reads_only_its_own_config(running: tuple[Path, HubBroker]) -> None:
    """Mosquitto 2.0 grants any SUBSCRIBE and applies the read ACL per message: check delivery."""
    site_dir, broker = running
    hub = hub_listening(site_dir, broker.port)
    s1 = ok(as_user(site_dir, broker.port, "s1"))
    s1.subscribe(f"footfall/{SITE}/#")
    s2 = ok(as_user(site_dir, broker.port, "s2"))
    s2.publish(f"footfall/{SITE}/s2/visit", "s2 data")
    assert receive(hub) == (f"footfall/{SITE}/s2/visit", "s2 data")
    sync = ok(as_user(site_dir, broker.port, mosquitto.SYNC_USER))
    sync.publish(f"footfall/{SITE}/s2/config", "for s2")
    sync.publish(f"footfall/{SITE}/s1/config", "for s1")
    # In-order delivery from one publisher: "for s1" arriving means "for s2" was withheld.
    assert receive(s1) == (f"footfall/{SITE}/s1/config", "for s1")
    assert s1.messages.empty()
    assert [receive(hub)[1], receive(hub)[1]] == ["for s2", "for s1"]
    # The hub may write neither sensor data nor config (the sync's marker closes the window).
    hub.publish(f"footfall/{SITE}/s1/visit", "forged by hub")
    hub.publish(f"footfall/{SITE}/s1/config", "config by hub")
    sync.publish(f"footfall/{SITE}/s1/config", "after")
    assert receive(hub) == (f"footfall/{SITE}/s1/config", "after")
    assert receive(s1) == (f"footfall/{SITE}/s1/config", "after")
    assert hub.messages.empty() and s1.messages.empty()
    for c in (s1, s2, sync, hub):
        c.close()


@needs_broker
def test_revoked_sensor_is_refused_after_reload(running: tuple[Path, HubBroker], tmp_path: Path) -> None:
    site_dir, broker = running
    s2_files = steal(site_dir, "s2", tmp_path / "stolen")
    ok(as_user(site_dir, broker.port, "s2")).close()
    pv.revoke(site_dir, "s2")
    assert not (site_dir / "sensors" / "s2").exists()
    broker.reload()
    refused = connect(
        broker.port,
        ca_file=s2_files["ca"],
        username="s2",
        password=s2_files["password"],
        cert=s2_files["cert"],
        key=s2_files["key"],
    )
    assert isinstance(refused, str) and "refused" in refused, refused
    ok(as_user(site_dir, broker.port, "s1")).close()  # the others carry on
    state = pv.load(site_dir)
    assert state.sensors["s2"]["status"] == "revoked" and "password_hash" not in state.sensors["s2"]
    assert any(r["subject"] == "s2" for r in state.revoked) and state.crl["entries"] == 1
    broker.restart()
    assert isinstance(connect(broker.port, ca_file=s2_files["ca"], username="s2", password=s2_files["password"]), str)
    # Bringing the id back issues fresh credentials.
    pv.add_sensor(site_dir, "s2")
    broker.reload()
    ok(as_user(site_dir, broker.port, "s2")).close()


@needs_broker
def test_rotated_password_old_refused_new_accepted(running: tuple[Path, HubBroker]) -> None:
    site_dir, broker = running
    old = bundle_files(site_dir, "s1")
    pv.rotate(site_dir, "s1")
    new = bundle_files(site_dir, "s1")
    assert new["password"] != old["password"]
    broker.reload()
    refused = connect(broker.port, ca_file=old["ca"], username="s1", password=old["password"])
    assert isinstance(refused, str), refused
    ok(as_user(site_dir, broker.port, "s1")).close()
    # The hub's own identity rotates the same way.
    old_hub = bundle_files(site_dir, mosquitto.HUB_USER)
    pv.rotate(site_dir, mosquitto.HUB_USER)
    broker.reload()
    assert isinstance(
        connect(broker.port, ca_file=old_hub["ca"], username=mosquitto.HUB_USER, password=old_hub["password"]), str
    )
    hub_listening(site_dir, broker.port).close()
    # And the sync's.
    old_sync = bundle_files(site_dir, mosquitto.SYNC_USER)
    pv.rotate(site_dir, mosquitto.SYNC_USER)
    broker.reload()
    assert isinstance(
        connect(broker.port, ca_file=old_sync["ca"], username=mosquitto.SYNC_USER, password=old_sync["password"]), str
    )
    ok(as_user(site_dir, broker.port, mosquitto.SYNC_USER)).close()


@needs_broker
def test_mutual_tls_refuses_clients_without_a_certificate(site: tuple[Path, HubBroker]) -> None:
    site_dir, broker = site
    # Certificate and password both checked, not tied together (`hub --mtls --no-identity-as-username`).
    pv.configure_hub(site_dir, require_certificate=True, use_identity_as_username=False)
    broker.start()
    f = bundle_files(site_dir, "s1")
    no_cert = connect(broker.port, ca_file=f["ca"], username="s1", password=f["password"])
    assert isinstance(no_cert, str), no_cert
    # A certificate with the right password passes; the password is still checked.
    ok(as_user(site_dir, broker.port, "s1")).close()
    assert isinstance(as_user(site_dir, broker.port, "s1", password="nope"), str)


@needs_broker
def test_mutual_tls_identity_and_crl(site: tuple[Path, HubBroker], tmp_path: Path) -> None:
    """With the certificate CN as username, the CRL is what locks a revoked sensor out."""
    site_dir, broker = site
    pv.configure_hub(site_dir, require_certificate=True, use_identity_as_username=True)
    broker.start()
    hub = hub_listening(site_dir, broker.port)
    # No password at all: the certificate is the identity, and the ACL still applies to it.
    s1 = ok(as_user(site_dir, broker.port, "s1", username=None, password=None, protocol=mqtt.MQTTv5))
    assert s1.publish(f"footfall/{SITE}/s2/visit", "forged").getName() == "Not authorized"
    assert s1.publish(f"footfall/{SITE}/s1/visit", "mine").getName() == "Success"
    assert receive(hub) == (f"footfall/{SITE}/s1/visit", "mine")
    s1.close()
    hub.close()
    s2 = steal(site_dir, "s2", tmp_path / "stolen")
    ok(as_user(site_dir, broker.port, "s2", username=None, password=None)).close()
    pv.revoke(site_dir, "s2")
    # Mosquitto 2.0.11 re-reads the crlfile on SIGHUP (measured here), and a restart of course.
    broker.reload()
    refused = connect(broker.port, ca_file=s2["ca"], cert=s2["cert"], key=s2["key"])
    assert isinstance(refused, str), refused
    assert "certificate verify failed" in broker.log.read_text().split("Reloading config")[-1]
    broker.restart()
    assert isinstance(connect(broker.port, ca_file=s2["ca"], cert=s2["cert"], key=s2["key"]), str)
    ok(as_user(site_dir, broker.port, "s1", username=None, password=None)).close()
    # Rotation under mutual TLS: the superseded certificate is in the CRL, the new one works.
    old_s1 = steal(site_dir, "s1", tmp_path / "old-s1")
    pv.rotate(site_dir, "s1")
    broker.reload()
    assert isinstance(connect(broker.port, ca_file=old_s1["ca"], cert=old_s1["cert"], key=old_s1["key"]), str)
    ok(as_user(site_dir, broker.port, "s1", username=None, password=None)).close()


@needs_broker
def test_bridge_forwards_site_topics_to_central_over_tls(site: tuple[Path, HubBroker], tmp_path: Path) -> None:
    site_dir, broker = site
    # A stand-in central broker with its own CA (a different organisation's PKI).
    central_dir = tmp_path / "central"
    central_root = _install_root()
    central_port = free_port()
    pv.init_site(central_dir, "central", ["127.0.0.1"])
    for name in ("ca.pem", "server.crt", "server.key"):
        shutil.copyfile(central_dir / "broker" / name, central_root / "etc" / name)
        os.chmod(central_root / "etc" / name, 0o644)
    conf = central_root / "etc" / "central.conf"
    conf.write_text(
        f"listener {central_port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {central_root}/etc/ca.pem\ncertfile {central_root}/etc/server.crt\n"
        f"keyfile {central_root}/etc/server.key\n"
    )
    central_ca = central_root / "etc" / "ca.pem"
    log = open(central_root / "central.log", "ab")  # noqa: SIM115
    central = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_port(central_port)
        pv.configure_hub(
            site_dir,
            bridge=pv.Bridge(
                address=f"127.0.0.1:{central_port}",
                remote_username=SITE,
                remote_password="bridge-secret",
                cafile=str(central_ca),
            ),
        )
        assert "bridge-secret" not in (site_dir / "site.json").read_text()
        assert "remote_password bridge-secret" in (site_dir / "broker" / "mosquitto.conf").read_text()
        broker.start()
        listener = ok(connect(central_port, ca_file=str(central_ca)))
        assert listener.subscribe("footfall/#").value == 1
        s1 = ok(as_user(site_dir, broker.port, "s1"))
        deadline = time.monotonic() + 15
        # The bridge connects asynchronously: publish until the first message comes through.
        while True:
            s1.publish(f"footfall/{SITE}/s1/visit", "bridged")
            try:
                assert receive(listener, timeout=0.5) == (f"footfall/{SITE}/s1/visit", "bridged")
                break
            except queue.Empty:
                assert time.monotonic() < deadline, broker.log.read_text()
        s1.close()
        listener.close()
    finally:
        central.terminate()
        central.wait(5)
        shutil.rmtree(central_root, ignore_errors=True)


# -- the command line ------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    import argparse

    from footfall.tools.provision_cli import register_provision

    parser = argparse.ArgumentParser(prog="footfall")
    register_provision(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_add_sensor_platform_openwrt_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--platform openwrt`: no hopping and a small RAM buffer without remembering any flag."""
    d = str(tmp_path / "site")
    init = ["provision", "init-site", "--dir", d, "--site", SITE, "--host", "hub.local", "--no-ca-passphrase"]
    assert run_cli(*init) == 0
    assert run_cli("provision", "add-sensor", "--dir", d, "s1", "--platform", "openwrt") == 0
    out = capsys.readouterr().out
    assert "footfall-agent.init" in out and "packages.txt" in out
    text = (tmp_path / "site/sensors/s1/agent.toml").read_text()
    agent = tomllib.loads(text)
    assert agent["capture"] == {"source": "iface:mon0", "channels": [], "dwell_s": 0.25}
    # The queue in RAM; the hub's config (opt-outs) on flash, so it survives a reboot.
    assert agent["buffer"] == {
        "path": "/var/lib/footfall/buffer.db",
        "max_bytes": 5_000_000,
        "hub_config": "/etc/footfall/hub-config.json",
    }
    assert "OpenWrt" in text.split("\n\n")[0]  # the header says why
    # The agent's own loader reads it: no hopping means no ChannelHopper (edge_agent/cli.py).
    from footfall.edge_agent.config import AgentConfig

    cfg = AgentConfig.load(tmp_path / "site/sensors/s1/agent.toml")
    assert cfg.channels == [] and cfg.buffer_max_bytes == 5_000_000
    assert str(cfg.hub_config_file()) == "/etc/footfall/hub-config.json"
    # A flag given still wins over the preset; one not given keeps it.
    assert run_cli("provision", "add-sensor", "--dir", d, "s2", "--platform", "openwrt", "--channels", "1,6,11") == 0
    s2 = tomllib.loads((tmp_path / "site/sensors/s2/agent.toml").read_text())
    assert s2["capture"]["channels"] == [1, 6, 11] and s2["buffer"]["max_bytes"] == 5_000_000
    args = ["--platform", "openwrt", "--buffer-path", "/mnt/sda1/footfall/buffer.db", "--buffer-max-bytes", "20000000"]
    assert run_cli("provision", "add-sensor", "--dir", d, "s3", *args) == 0
    s3 = tomllib.loads((tmp_path / "site/sensors/s3/agent.toml").read_text())
    assert s3["buffer"]["path"] == "/mnt/sda1/footfall/buffer.db" and s3["buffer"]["max_bytes"] == 20_000_000
    # The default platform is unchanged (Raspberry Pi / Debian), and hopping can be switched off there.
    assert run_cli("provision", "add-sensor", "--dir", d, "s4", "--channels", "none") == 0
    s4 = tomllib.loads((tmp_path / "site/sensors/s4/agent.toml").read_text())
    assert s4["capture"]["channels"] == [] and s4["buffer"]["max_bytes"] == 50_000_000
    assert run_cli("provision", "add-sensor", "--dir", d, "s5") == 0
    assert tomllib.loads((tmp_path / "site/sensors/s5/agent.toml").read_text())["capture"]["channels"] == [1, 6, 11]
    # The preset is remembered: a rotated OpenWrt sensor keeps its OpenWrt settings.
    assert pv.load(Path(d)).sensors["s1"]["settings"]["platform"] == "openwrt"
    assert run_cli("provision", "rotate", "--dir", d, "s1") == 0
    assert tomllib.loads((tmp_path / "site/sensors/s1/agent.toml").read_text())["capture"]["channels"] == []
    with pytest.raises(ValueError):
        pv.platform_settings("windows")


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "site")
    key = tmp_path / "chain.key"
    key.write_text("ab" * 32 + "\n")
    assert (
        run_cli(
            "provision",
            "init-site",
            "--dir",
            d,
            "--site",
            SITE,
            "--host",
            "hub.local",
            "--host",
            "192.168.1.10",
            "--hash-key-file",
            str(key),
            "--mtls",
            "--no-identity-as-username",
            "--no-ca-passphrase",
        )
        == 0
    )
    assert run_cli("provision", "add-sensor", "--dir", d, "s1", "--channels", "1,6", "--inside-rssi", "-65") == 0
    agent = tomllib.loads((tmp_path / "site/sensors/s1/agent.toml").read_text())
    assert agent["capture"]["channels"] == [1, 6] and agent["visits"]["inside_rssi"] == -65
    assert (tmp_path / "site/sensors/s1/hash.key").read_text().strip() == "ab" * 32
    assert "require_certificate true" in (tmp_path / "site/broker/mosquitto.conf").read_text()
    san = pv.load(Path(d)).server["hosts"]
    assert san[:2] == ["hub.local", "192.168.1.10"] and "localhost" in san
    assert run_cli("provision", "list", "--dir", d) == 0
    assert "s1" in capsys.readouterr().out
    assert run_cli("provision", "rotate", "--dir", d, "s1") == 0
    assert run_cli("provision", "revoke", "--dir", d, "s1", "--reason", "stolen") == 0
    assert run_cli("provision", "crl", "--dir", d) == 0
    assert pv.load(Path(d)).crl["entries"] == 2
    before = pv.load(Path(d)).crl["next_update"]
    capsys.readouterr()
    assert run_cli("provision", "crl", "--dir", d, "--days", "0") == 2  # would lock every sensor out
    assert "30 or more" in capsys.readouterr().err and pv.load(Path(d)).crl["next_update"] == before
    assert run_cli("provision", "hub", "--dir", d, "--no-mtls", "--port", "9883") == 0
    conf = (tmp_path / "site/broker/mosquitto.conf").read_text()
    assert "listener 9883" in conf and "require_certificate false" in conf
    capsys.readouterr()
    # Mistakes are one line and status 2, not a traceback.
    assert run_cli("provision", "revoke", "--dir", d, "s1") == 2
    assert run_cli("provision", "rotate", "--dir", d, "nobody") == 2
    assert run_cli("provision", "add-sensor", "--dir", str(tmp_path / "nowhere"), "s1") == 2
    assert run_cli("provision", "hub", "--dir", d, "--identity-as-username") == 2
    err = capsys.readouterr().err
    assert err.count("footfall provision: error:") == 4, err
