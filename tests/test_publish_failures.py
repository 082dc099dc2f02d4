"""When the link to the broker fails: what the journal says, what happens to refused publishes,
a dead network loop, and opt-outs that hold from the first frame. Real Mosquitto throughout."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from footfall import payloads, schema, topics
from footfall.edge_agent.buffer import DiskBuffer
from footfall.edge_agent.connection import ConnectionLog
from footfall.edge_agent.identity import Identifier, format_mac
from footfall.edge_agent.publish import Publisher, TLSOptions
from footfall.tools.broker import Broker, free_port, mosquitto_path, wait_port

SITE, SENSOR = "shop1", "sensor-a"
KEY_HEX = "5e" * 32
LOGGER = "footfall.edge_agent.publish"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def presence(i: int) -> dict[str, Any]:
    return payloads.presence_payload(site=SITE, sensor=SENSOR, ts=1_700_000_000 + i, window_s=60, devices=i, inside=0)


def lines(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


class Collector:
    """A hub-like subscriber (MQTT 5, like hub/ingest.py) that keeps every payload per topic kind."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        ready = threading.Event()
        client_id = f"hub-{time.monotonic_ns()}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda c, u, m: self._add(m.topic, bytes(m.payload))
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.site_filter(SITE), qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "collector could not subscribe"

    def _add(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.got.append((topic, payload))

    def payloads(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p in self.got if t.endswith("/" + kind) and p]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- 1. connect failures in the journal ----------------------------------------------------------


def test_connection_log_says_each_cause_once_then_rate_limits() -> None:
    now = [0.0]
    log = ConnectionLog("hub:8883", repeat_s=600, clock=lambda: now[0])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        log.connected("first")
        for _ in range(50):  # a retry every few seconds for 5 minutes: one line
            now[0] += 6
            log.failed("connection refused")
        now[0] += 400  # past the 10 minutes: one reminder, with the count
        log.failed("connection refused")
        log.failed("certificate verify failed: certificate is not yet valid")  # a new cause: at once
        log.failed("certificate verify failed: certificate is not yet valid")
        log.connected("back")
        # Flapping for the same cause within the window: quiet, and so is its reconnection.
        now[0] += 10
        log.failed("certificate verify failed: certificate is not yet valid")
        log.connected("again")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    got = [(r.levelname, r.getMessage()) for r in records if r.levelno >= logging.INFO]
    assert got == [
        ("INFO", "MQTT connected to hub:8883 (first)"),
        ("WARNING", "MQTT connect to hub:8883 failed: connection refused"),
        ("WARNING", "MQTT connect to hub:8883 failed: connection refused (again; 50 attempts in the last 12 min)"),
        ("WARNING", "MQTT connect to hub:8883 failed: certificate verify failed: certificate is not yet valid"),
        ("INFO", "MQTT connected to hub:8883 after 53 failed attempts in 694 s (back)"),
    ]


def test_refused_port_and_unknown_host_are_logged_once_then_reconnect_is_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed")
    caplog.set_level(logging.INFO, logger=LOGGER)
    # The real resolver, timed: here a ".invalid" name fails in milliseconds (NXDOMAIN, RFC 6761),
    # but a resolver that times out instead takes its full timeout (5 s x attempts x servers) per
    # connect attempt. What the test needs is three attempts, however long each takes.
    t0 = time.monotonic()
    try:
        socket.getaddrinfo("no-such-hub.invalid", 1883)
    except socket.gaierror:
        pass
    else:
        pytest.skip("this resolver answers for .invalid names")
    lookup_s = time.monotonic() - t0
    with DiskBuffer(tmp_path / "dns.db") as buf:
        pub = Publisher(SITE, SENSOR, "no-such-hub.invalid", 1883, buf, reconnect_min_delay=0.05,
                        reconnect_max_delay=0.1)  # fmt: skip
        with pub:
            wait_until(lambda: pub.stats()["connect_failures"] >= 3, 20 + 4 * lookup_s, "DNS failures")
        assert lines(caplog, logging.WARNING, "MQTT connect to no-such-hub.invalid:1883 failed: cannot resolve")
        assert len(lines(caplog, logging.WARNING, "no-such-hub.invalid")) == 1

    caplog.clear()
    broker = Broker(tmp_path / "broker")  # its port, nothing listening yet
    with DiskBuffer(tmp_path / "refused.db") as buf:
        pub = Publisher(SITE, SENSOR, "127.0.0.1", broker.port, buf, reconnect_min_delay=0.05, reconnect_max_delay=0.1)
        with pub:
            pub.publish("presence", presence(0))
            wait_until(lambda: pub.stats()["connect_failures"] >= 5, what="refused connects")
            refused = lines(caplog, logging.WARNING, "failed: connection refused")
            assert refused == [
                f"MQTT connect to 127.0.0.1:{broker.port} failed: connection refused "
                "(is the broker running and listening on that port?)"
            ]
            broker.start()
            try:
                assert pub.flush(20)
                again = lines(caplog, logging.INFO, f"MQTT connected to 127.0.0.1:{broker.port} after")
                assert len(again) == 1 and "failed attempts" in again[0]
            finally:
                pub.close()
                broker.stop()


def _cert(subject: str, key: Any, issuer: Any = None, issuer_key: Any = None, san: list[Any] | None = None,
          not_before: datetime.timedelta = datetime.timedelta(minutes=-5)) -> Any:  # fmt: skip
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + not_before)
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


@pytest.fixture
def secured_broker() -> Iterator[dict[str, Any]]:
    """Mosquitto with a password file and an ACL on a plain listener (for the ACL and credential
    tests), and two TLS listeners: one whose certificate names broker.example only, one whose
    certificate (for 127.0.0.1) becomes valid tomorrow, as a sensor with an unsynced clock sees it."""
    pytest.importorskip("cryptography")
    import ipaddress

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import DNSName, IPAddress

    exe = mosquitto_path()
    if exe is None or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto / mosquitto_passwd not installed")
    workdir = Path(tempfile.mkdtemp(prefix="footfall-acl-"))
    workdir.chmod(0o755)  # readable after Mosquitto drops root

    def pem(obj: Any) -> bytes:
        if hasattr(obj, "public_bytes"):
            return obj.public_bytes(serialization.Encoding.PEM)
        return obj.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key, name_key, future_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("footfall test CA", ca_key)
    files = {
        "ca.pem": pem(ca),
        "name.pem": pem(_cert("broker", name_key, ca, ca_key, [DNSName("broker.example")])),
        "name.key": pem(name_key),
        "future.pem": pem(
            _cert(
                "broker",
                future_key,
                ca,
                ca_key,
                [IPAddress(ipaddress.ip_address("127.0.0.1"))],
                not_before=datetime.timedelta(days=1),
            )
        ),  # fmt: skip
        "future.key": pem(future_key),
    }
    for name, data in files.items():
        (workdir / name).write_bytes(data)
        (workdir / name).chmod(0o644)
    passwd = workdir / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), SENSOR, "s3cret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "hub", "hubpass"], check=True)
    passwd.chmod(0o644)
    acl = workdir / "acl"
    prefix = f"footfall/{SITE}/{SENSOR}"

    def write_acl(allow_presence: bool) -> None:
        sensor = [f"topic write {prefix}/status", f"topic write {prefix}/visit", f"topic write {prefix}/health",
                  f"topic read {prefix}/config"]  # fmt: skip
        if allow_presence:
            sensor.append(f"topic write {prefix}/presence")
        acl.write_text("\n".join([f"user {SENSOR}", *sensor, "", "user hub", "topic readwrite footfall/#", ""]))
        acl.chmod(0o644)

    write_acl(False)
    plain, name_port, future_port = free_port(), free_port(), free_port()
    user = "user root\n" if os.geteuid() == 0 else ""
    (workdir / "mosquitto.conf").write_text(
        f"{user}per_listener_settings false\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl}\n"
        f"listener {plain} 127.0.0.1\n"
        f"listener {name_port} 127.0.0.1\ncafile {workdir}/ca.pem\n"
        f"certfile {workdir}/name.pem\nkeyfile {workdir}/name.key\n"
        f"listener {future_port} 127.0.0.1\ncafile {workdir}/ca.pem\n"
        f"certfile {workdir}/future.pem\nkeyfile {workdir}/future.key\n"
    )
    log = open(workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the broker process
    proc = subprocess.Popen([exe, "-c", str(workdir / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        for port in (plain, name_port, future_port):
            wait_port(port)
        yield {"plain": plain, "name": name_port, "future": future_port, "dir": workdir,
               "allow_presence": lambda: (write_acl(True), proc.send_signal(signal.SIGHUP))}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(
    ("listener", "tls", "password", "cause"),
    [
        ("name", "verify", "s3cret", "certificate verify failed: IP address mismatch"),
        ("future", "verify", "s3cret", "certificate verify failed: certificate is not yet valid"),
        ("plain", None, "wrong", "broker refused the connection: "),
    ],
    ids=["name-mismatch", "clock-not-synced", "bad-password"],
)
def test_tls_and_credential_failures_say_why(
    secured_broker: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    listener: str, tls: str | None, password: str, cause: str,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger=LOGGER)
    port = secured_broker[listener]
    options = TLSOptions(ca_certs=str(secured_broker["dir"] / "ca.pem")) if tls else None
    with DiskBuffer(tmp_path / "buf.db") as buf:
        pub = Publisher(SITE, SENSOR, "127.0.0.1", port, buf, SENSOR, password, options,
                        reconnect_min_delay=0.05, reconnect_max_delay=0.1)  # fmt: skip
        with pub:
            pub.publish("presence", presence(0))
            wait_until(lambda: pub.stats()["connect_failures"] >= 4, what="repeated failures")
            stats = pub.stats()
    warnings = lines(caplog, logging.WARNING, "MQTT connect to")
    assert len(warnings) == 1, warnings  # one line for four and more attempts
    assert warnings[0].startswith(f"MQTT connect to 127.0.0.1:{port} failed: {cause}"), warnings
    assert not stats["connected"] and stats["backlog"] == 1  # kept for when it works
    assert pub.dead is None


# -- 3. MQTT 5: publishes the ACL denies stay buffered ---------------------------------------------


def test_publishes_the_acl_denies_are_counted_held_and_sent_once_allowed(
    secured_broker: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    port = secured_broker["plain"]
    hub = Collector(port, "hub", "hubpass")
    with DiskBuffer(tmp_path / "buf.db") as buf:
        pub = Publisher(SITE, SENSOR, "127.0.0.1", port, buf, SENSOR, "s3cret", refused_retry_s=0.5,
                        reconnect_min_delay=0.1)  # fmt: skip
        try:
            pub.start()
            wait_until(lambda: pub.connected, what="connected")
            health = {"v": 1, "type": "health", "id": "h1", "site": SITE, "sensor": SENSOR, "ts": 1.0,
                      "version": "t", "uptime_s": 1.0, "frames": 0, "frames_per_s": 0.0, "rejected": 0,
                      "devices_tracked": 0, "backlog": 0, "dropped": 0}  # fmt: skip
            for i in range(3):
                pub.publish("presence", presence(i))
            pub.publish("health", health)
            wait_until(lambda: pub.stats()["held"] >= 1 and pub.stats()["acked"] == 1, what="denial")
            for i in range(3, 6):
                pub.publish("presence", presence(i))
            t0 = time.monotonic()
            assert not pub.flush(10)  # all that is left waits for the ACL: no point waiting
            assert time.monotonic() - t0 < 5
            stats = pub.stats()
            assert stats["held"] == 6 and stats["backlog"] == 6 and len(buf) == 6
            assert 1 <= stats["denied"] <= 3  # only the first ones went out: the topic is held now
            assert hub.payloads("health") and not hub.payloads("presence")
            # Probes every 0.5-1 s meanwhile: each refused, nothing lost, not one line per refusal.
            time.sleep(2.5)
            assert pub.stats()["denied"] <= 3 + 6 and len(buf) == 6
            denied = lines(caplog, logging.WARNING, "refused a publish to")
            assert denied == [
                f"MQTT broker refused a publish to footfall/{SITE}/{SENSOR}/presence: Not authorized; messages of "
                "this topic stay in the disk buffer and are retried (one probe on reconnect, then every 0-600 s)"
            ]

            secured_broker["allow_presence"]()  # the operator fixes the ACL and reloads Mosquitto
            wait_until(lambda: pub.stats()["held"] == 0, 20, "the next probe to be accepted")
            assert pub.flush(20), pub.stats()
            wait_until(lambda: len(hub.payloads("presence")) >= 6, what="held messages delivered")
            assert sorted(p["devices"] for p in hub.payloads("presence")) == list(range(6))
            assert pub.stats()["held"] == 0 and len(buf) == 0
            assert lines(caplog, logging.INFO, "accepts publishes to")
        finally:
            pub.close()
            hub.close()


def test_health_carries_the_denied_and_held_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    monkeypatch.setenv("FOOTFALL_HASH_KEY", KEY_HEX)
    cfg = AgentConfig(site=SITE, sensor=SENSOR, buffer_path=str(tmp_path / "buf.db"))
    agent = Agent(cfg, lambda kind, payload: None, link=lambda: {"denied": 4, "held": 7})
    health = agent.health(time.time())
    assert health["denied"] == 4 and health["held"] == 7
    schema.validate(payloads.dumps(health), "health")


# -- 2. watchdog: a dead network loop ends the agent ----------------------------------------------


def test_an_exception_in_the_network_loop_makes_the_publisher_dead(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    boom_topic = topics.topic(SITE, SENSOR, "config") + "-boom"

    def boom(client: Any, userdata: Any, message: Any) -> None:
        raise LookupError("unknown encoding: idna")  # what a stripped Python raises in there

    with DiskBuffer(tmp_path / "buf.db") as buf:
        pub = Publisher(SITE, SENSOR, "127.0.0.1", broker.port, buf).start()
        try:
            wait_until(lambda: pub.connected, what="connected")
            assert pub.dead is None
            # Retained and acknowledged before the subscription exists: the broker delivers it
            # whenever the SUBSCRIBE arrives, so no guess at how long that takes (the broker is
            # this test's own, so the retained message disturbs nothing else).
            other = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="poke")
            other.connect("127.0.0.1", broker.port)
            other.loop_start()
            other.publish(boom_topic, b"x", qos=1, retain=True).wait_for_publish(5)
            other.disconnect()
            other.loop_stop()
            pub.client.message_callback_add(boom_topic, boom)
            pub.client.subscribe(boom_topic, qos=1)
            wait_until(lambda: pub.dead is not None, 10, "the publisher to report the dead loop")
            assert pub.dead == "LookupError: unknown encoding: idna"
            pub.publish("presence", presence(1))  # still buffered: the next run sends it
        finally:
            t0 = time.monotonic()
            pub.close()
            assert time.monotonic() - t0 < 8
        assert len(buf) == 1
    dead = lines(caplog, logging.CRITICAL, "MQTT network loop is dead")
    assert dead == [
        "MQTT network loop is dead (LookupError: unknown encoding: idna): nothing more reaches the broker; "
        "the agent exits so that its service manager restarts it"
    ]


_RADIOTAP = bytes.fromhex("00000f002e00000010") + struct.pack("<BHH", 2, 2437, 0xA0)
_IES = bytes.fromhex("000001040204 0b16 32080c1218243048606c 030106".replace(" ", ""))


def probe(mac: bytes, rssi: int = -50, seq: int = 0) -> bytes:
    """A probe request with an FCS as a monitor interface gives it (as in test_agent_e2e)."""
    mpdu = b"\x40\x00\x00\x00" + b"\xff" * 6 + mac + b"\xff" * 6 + struct.pack("<H", (seq & 0xFFF) << 4) + _IES
    return _RADIOTAP + bytes((rssi & 0xFF,)) + mpdu + zlib.crc32(mpdu).to_bytes(4, "little")


OPTED_OUT = bytes.fromhex("001b63a1b2c3")
OTHER = bytes.fromhex("001b63d4e5f6")


def write_capture(path: Path, spread_s: float = 20.0) -> Path:
    """The opted-out phone's frames come first, the very moment capture opens; another phone too."""
    from footfall.edge_agent.pcapfile import write_pcap

    t0 = time.time()
    frames = [(t0 + k * 0.01, probe(OPTED_OUT, seq=k)) for k in range(5)]
    frames += [(t0 + 1 + k * spread_s / 5, probe(OTHER, seq=k)) for k in range(6)]
    write_pcap(path, frames)
    return path


def agent_toml(tmp_path: Path, port: int, capture: Path, *, host: str = "127.0.0.1", realtime: bool = False,
               wait: float = 5.0) -> Path:  # fmt: skip
    path = tmp_path / "agent.toml"
    path.write_text(
        f'site = "{SITE}"\nsensor = "{SENSOR}"\n'
        f'[capture]\nsource = "pcap:{capture}"\nrealtime = {"true" if realtime else "false"}\n'
        f'[mqtt]\nhost = "{host}"\nport = {port}\nconfig_wait_s = {wait}\n'
        f'[buffer]\npath = "{tmp_path / "buffer.db"}"\n'
    )
    return path


def run_agent(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FOOTFALL_HASH_KEY=KEY_HEX)
    return subprocess.run(
        [sys.executable, "-m", "footfall", "-v", "agent", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_agent_run_exits_nonzero_when_the_network_loop_dies(tmp_path: Path) -> None:
    # A hub name with a 64-character label: name resolution raises UnicodeError (not an OSError)
    # in the network loop, the same kind of failure as "LookupError: unknown encoding: idna".
    capture = write_capture(tmp_path / "cap.pcap", spread_s=120)
    config = agent_toml(tmp_path, 1883, capture, host="x" * 64 + ".example", realtime=True, wait=1)
    t0 = time.monotonic()
    proc = run_agent(config)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - t0 < 30  # not the two minutes the capture lasts
    dead = [line for line in proc.stderr.splitlines() if "network loop is dead" in line]
    assert len(dead) == 1 and "UnicodeError" in dead[0] and "CRITICAL" in dead[0], proc.stderr
    assert "Traceback" not in proc.stderr


# -- 4. opt-outs: saved on the sensor, in force before the first frame -----------------------------


def publish_retained_config(port: int, config: dict[str, Any]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hub-config-writer")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topics.topic(SITE, SENSOR, "config"), payloads.dumps(config), qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_optout_applies_from_the_first_frame_and_survives_a_broker_outage(broker: Broker, tmp_path: Path) -> None:
    ident = Identifier(bytes.fromhex(KEY_HEX))
    opted, other = ident.device_id(OPTED_OUT), ident.device_id(OTHER)
    publish_retained_config(broker.port, {"v": 1, "type": "config", "optout": [opted, "00:1b:63:a1:b2:c3"]})
    hub = Collector(broker.port)
    capture = write_capture(tmp_path / "cap.pcap")
    config = agent_toml(tmp_path, broker.port, capture)
    try:
        # A fresh sensor: nothing saved yet, the retained config arrives over MQTT before capture.
        proc = run_agent(config)
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: hub.payloads("visit"), 10, "the other phone's visit")
        devices = {v["device"] for v in hub.payloads("visit")}
        assert devices == {other}, "the opted-out phone leaked a visit"
    finally:
        hub.close()
    saved = tmp_path / "buffer.hub-config.json"
    assert json.loads(saved.read_text())["optout"] == [opted]  # the raw MAC the hub sent is not kept
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    blob = saved.read_bytes().lower()
    for style in ("colon-lower", "plain-lower", "dash-lower"):
        assert format_mac(OPTED_OUT, style).encode() not in blob

    # Next start with the broker down: the saved opt-out still holds; visits wait in the buffer.
    broker.stop()
    proc = run_agent(agent_toml(tmp_path, broker.port, write_capture(tmp_path / "cap2.pcap"), wait=1))
    assert proc.returncode == 0, proc.stderr
    assert "applied the hub config saved in" in proc.stderr
    with DiskBuffer(tmp_path / "buffer.db") as buf:
        rows = buf.peek(10_000)
    visits = [json.loads(r.payload) for r in rows if r.topic.endswith("/visit")]
    assert visits and {v["device"] for v in visits} == {other}


def test_a_corrupt_saved_config_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    monkeypatch.setenv("FOOTFALL_HASH_KEY", KEY_HEX)
    cfg = AgentConfig(site=SITE, sensor=SENSOR, buffer_path=str(tmp_path / "buf.db"))
    cfg.hub_config_file().write_bytes(b"\x00{not json")
    with caplog.at_level(logging.WARNING):
        agent = Agent(cfg, lambda kind, payload: None)
    assert "ignoring the saved hub config" in caplog.text
    assert agent.identifier.optout == frozenset()
    # The next config from the hub replaces it.
    agent.apply_config({"v": 1, "type": "config", "optout": ["ab" * 16], "visits": {"inside_rssi": -66}})
    again = Agent(AgentConfig(site=SITE, sensor=SENSOR, buffer_path=str(tmp_path / "buf.db")), lambda k, p: None)
    assert again.identifier.optout == frozenset({"ab" * 16}) and again.config.visits.inside_rssi == -66


# -- 3. the in-flight window, probes and lost connections across reconnects -----------------------


@pytest.mark.parametrize(("receive_max", "window"), [(4, 3), (1, 1)])
def test_the_window_leaves_a_slot_of_the_brokers_receive_maximum_for_the_status(
    tmp_path: Path, receive_max: int, window: int
) -> None:
    # Mosquitto's max_inflight_messages is the Receive Maximum of its CONNACK. The `online` status
    # goes out on every connect outside the buffer's rows: a window of the full Receive Maximum
    # would put one publish more in flight than the broker takes.
    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed")
    broker = Broker(tmp_path / "broker", extra_conf=f"max_inflight_messages {receive_max}\n").start()
    hub = Collector(broker.port)
    try:
        with DiskBuffer(tmp_path / "buf.db") as buf, Publisher(SITE, SENSOR, "127.0.0.1", broker.port, buf) as pub:
            wait_until(lambda: pub.connected, what="connected")
            assert pub.stats()["window"] == window
            for i in range(40):
                pub.publish("presence", presence(i))
            assert pub.flush(20), pub.stats()
            wait_until(lambda: len(hub.payloads("presence")) == 40, what="all delivered")
            assert [p["devices"] for p in hub.payloads("presence")] == list(range(40))
    finally:
        hub.close()
        broker.stop()


def test_a_probe_in_flight_at_a_reconnect_is_not_sent_twice() -> None:
    from footfall.edge_agent.held import HeldBack

    now = [0.0]
    held = HeldBack(clock=lambda: now[0], first_retry=30)
    held.refused("t/a", 5, "Not authorized")
    held.refused("t/b", 9, "Not authorized")
    held.hold("t/a", 6)
    now[0] = 31
    assert held.probes(lambda seq: True) == [("t/a", 5), ("t/b", 9)]
    held.refused("t/b", 9, "Not authorized")  # b's probe answered; a's still in flight
    held.retry_now()  # reconnect: paho resends a's probe itself
    assert held.probes(lambda seq: True) == [("t/b", 9)]  # only b is probed afresh
    assert not held.due()
    held.refused("t/a", 5, "Not authorized")  # the resend is answered: a backs off as usual
    assert held.probes(lambda seq: True) == [] and not held.due()
    now[0] += 61
    assert held.probes(lambda seq: True) == [("t/a", 5)]


def test_a_loop_failure_without_on_disconnect_still_counts_as_a_lost_connection(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A socket closed under paho: when select() is what fails, loop() returns CONN_LOST without
    # calling on_disconnect, and the publisher used to go on as if connected.
    caplog.set_level(logging.INFO, logger=LOGGER)
    hub = Collector(broker.port)
    with DiskBuffer(tmp_path / "buf.db") as buf:
        pub = Publisher(SITE, SENSOR, "127.0.0.1", broker.port, buf, reconnect_min_delay=0.05).start()
        try:
            wait_until(lambda: pub.connected, what="connected")
            pub.publish("presence", presence(0))
            assert pub.flush(10)
            sock = pub.client.socket()
            assert sock is not None
            sock.close()
            wait_until(lambda: pub.stats()["disconnects"] == 1, what="the lost connection to be noticed")
            for i in range(1, 20):
                pub.publish("presence", presence(i))
            wait_until(lambda: pub.stats()["reconnects"] == 1 and pub.connected, what="reconnected")
            assert pub.flush(20), pub.stats()
            wait_until(lambda: len(hub.payloads("presence")) >= 20, what="all delivered")
            assert sorted({p["devices"] for p in hub.payloads("presence")}) == list(range(20))
            # Which of paho's paths sees the closed socket depends on where its loop was (select()
            # failing: no on_disconnect; a read failing: on_disconnect): either way, one loss.
            lost = lines(caplog, logging.WARNING, "MQTT connection to 127.0.0.1")
            assert len(lost) == 1 and lost[0].startswith(f"MQTT connection to 127.0.0.1:{broker.port} lost: "), lost
        finally:
            pub.close()
            hub.close()


def test_the_config_wait_gives_the_retained_config_time_and_stays_within_its_timeout(
    broker: Broker, tmp_path: Path
) -> None:
    from footfall.edge_agent.hubconfig import GRACE_S

    with DiskBuffer(tmp_path / "buf.db") as buf, Publisher(SITE, SENSOR, "127.0.0.1", broker.port, buf) as pub:
        pub.subscribe_config(lambda config: None)
        wait_until(lambda: pub.connected, what="connected")
        t0 = time.monotonic()
        assert not pub.wait_config(0.5)  # no config here: the grace would run on, the timeout ends it
        assert time.monotonic() - t0 < 0.5 + 1
        assert pub.wait_config(GRACE_S + 10)  # then the broker has none for us
        assert time.monotonic() - t0 >= GRACE_S - 0.5
