"""The hub's /metrics: sensor fleet health in Prometheus format, behind the API key."""

import argparse
import json
import re
import time
from datetime import UTC, datetime

from cryptography import x509
from fastapi.testclient import TestClient

from footfall import payloads
from footfall.hub import auth, monitor, prometheus, retention, serve, store
from footfall.hub.api import WebSettings, create_app
from footfall.hub.config import HubConfig
from footfall.hub.ingest import ingest_many
from footfall.hub.monitor import MonitorSources
from footfall.tools.provision import ca as provision_ca
from footfall.tools.provision import site as provision


def test_metrics_show_online_stale_and_offline_sensors(tmp_path):
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    now = time.time()
    config = HubConfig(site="shop", db=str(db))
    msgs = []
    for sensor, state in (("s1", "online"), ("s2", "offline"), ("s3", "online")):
        status = payloads.status_payload(site="shop", sensor=sensor, state=state, ts=now, version="0.1.0")
        msgs.append((f"footfall/shop/{sensor}/status", payloads.dumps(status)))
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


# ---------------------------------------------------------------- strict exposition checks
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_META = re.compile(rf"^# (HELP|TYPE) ({_NAME}) (.*)$")


def parse_exposition(text: str) -> dict[str, dict]:
    """Families of a text exposition (format 0.0.4), failing on anything a strict scraper refuses:
    a sample before its TYPE, a TYPE given twice, an unknown type, a malformed line or value,
    a duplicate series, a counter not named ``_total``. With prometheus_client installed its own
    parser reads the text too."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    seen: set[tuple[str, str]] = set()
    current = None
    for line in text.rstrip("\n").split("\n"):
        meta = _META.match(line)
        if meta:
            kind, name, rest = meta.groups()
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            assert not fam["samples"], f"{kind} after samples of {name}"
            if kind == "TYPE":
                assert fam["type"] is None, f"second TYPE for {name}"
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                fam["type"] = rest
            else:
                assert fam["help"] is None, f"second HELP for {name}"
                fam["help"] = rest
            current = name
            continue
        assert not line.startswith("#") and line, f"stray line {line!r}"
        m = _SAMPLE.match(line)
        assert m, f"malformed sample {line!r}"
        name, labels, value = m.groups()
        assert name == current and families[name]["type"], f"{name} outside its family"
        float(value)  # raises on anything but a float, +Inf, -Inf or NaN
        assert (name, labels or "") not in seen, f"duplicate series {line!r}"
        seen.add((name, labels or ""))
        pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or "")
        families[name]["samples"].append((dict(pairs), float(value)))
    for name, fam in families.items():
        assert (fam["type"] == "counter") == name.endswith("_total"), f"{name} is a {fam['type']}"
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return families
    parsed = {f.name for f in text_string_to_metric_families(text)}
    assert parsed == {n.removesuffix("_total") if families[n]["type"] == "counter" else n for n in families}
    return families


def value(families: dict, name: str, **labels: str) -> float:
    hits = [v for got, v in families[name]["samples"] if all(got.get(k) == str(w) for k, w in labels.items())]
    assert len(hits) == 1, f"{name}{labels}: {hits}"
    return hits[0]


def _status(sensor: str, state: str, now: float) -> tuple[str, bytes]:
    payload = payloads.status_payload(site="shop", sensor=sensor, state=state, ts=now, version="0.1.0")
    return f"footfall/shop/{sensor}/status", payloads.dumps(payload)


def test_every_rostered_sensor_has_series_from_the_start(tmp_path):
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    now = time.time()
    # s1 reports; s9 is in hub.toml and never connected; s7 was provisioned (site.json) and never
    # connected; s8 was provisioned and revoked: not expected.
    site_dir = tmp_path / "site"
    provision.init_site(site_dir, "shop", ["hub.lan"])
    for sensor in ("s7", "s8"):
        provision.add_sensor(site_dir, sensor)
    provision.revoke(site_dir, "s8")
    config = HubConfig(site="shop", db=str(db), sensors=["s1", "s9"])
    ingest_many(conn, [_status("s1", "online", now)], config)
    key = auth.create_api_key(conn, "prometheus")
    conn.close()

    sources = MonitorSources.from_config(config, site_dir=site_dir, env={})
    client = TestClient(create_app(db, WebSettings(refresh_interval_s=0, monitor_sources=sources)))
    r = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    fams = parse_exposition(r.text)
    assert value(fams, "footfall_sensor_up", sensor="s1") == 1
    for sensor in ("s9", "s7"):
        assert value(fams, "footfall_sensor_up", site="shop", sensor=sensor) == 0
        assert value(fams, "footfall_sensor_last_seen_timestamp_seconds", sensor=sensor) == 0
        assert value(fams, "footfall_sensor_messages_total", sensor=sensor) == 0
    assert value(fams, "footfall_sensor_expected", sensor="s9", source="config") == 1
    assert value(fams, "footfall_sensor_expected", sensor="s7", source="provisioning") == 1
    assert not [s for s, _ in fams["footfall_sensor_up"]["samples"] if s["sensor"] == "s8"]
    assert value(fams, "footfall_sensors", state="never_seen") == 2
    s7_cert = x509.load_pem_x509_certificate((site_dir / "sensors" / "s7" / "s7.crt").read_bytes())
    expiry = value(fams, "footfall_sensor_cert_expiry_timestamp_seconds", sensor="s7")
    assert expiry == s7_cert.not_valid_after_utc.timestamp()
    # The alert of docs/operator-guide.md: up == 0 names exactly the two silent sensors.
    assert sorted(s["sensor"] for s, v in fams["footfall_sensor_up"]["samples"] if v == 0) == ["s7", "s9"]


def test_metric_types_agent_totals_are_counters(tmp_path):
    conn = store.connect(tmp_path / "hub.db")
    now = time.time()
    health = {
        "v": 1, "type": "health", "id": "h1", "site": "shop", "sensor": "s1", "ts": now, "version": "0.1.0",
        "uptime_s": 120.0, "frames": 5000, "frames_per_s": 41.5, "rejected": 3, "devices_tracked": 17,
        "backlog": 12, "dropped": 4, "cpu_temp_c": 51.2, "denied": 0,
    }  # fmt: skip
    ingest_many(conn, [("footfall/shop/s1/health", json.dumps(health).encode())], HubConfig(site="shop"))
    text = prometheus.exposition(conn, now=now)
    fams = parse_exposition(text)
    types = {name: fam["type"] for name, fam in fams.items()}
    assert types["footfall_sensor_buffer_dropped_total"] == "counter"
    assert types["footfall_sensor_rejected_frames_total"] == "counter"
    assert types["footfall_sensor_frames_total"] == "counter"
    assert types["footfall_sensor_visits_total"] == "counter"
    assert types["footfall_sensor_messages_total"] == "counter"
    assert types["footfall_sensor_visits_stored"] == "gauge"
    assert types["footfall_sensor_up"] == "gauge"
    assert types["footfall_sensor_buffer_backlog"] == "gauge"
    assert "footfall_sensor_buffer_dropped" not in types and "footfall_sensor_rejected_frames" not in types
    assert value(fams, "footfall_sensor_buffer_dropped_total", sensor="s1") == 4
    assert value(fams, "footfall_sensor_rejected_frames_total", sensor="s1") == 3
    assert value(fams, "footfall_sensor_frames_total", sensor="s1") == 5000
    assert value(fams, "footfall_sensor_messages_total", sensor="s1") == 1
    assert "# TYPE footfall_sensor_buffer_dropped_total counter\n" in text


def _visit_rows(conn, day: str, first_seen: float, n: int, start_id: int) -> None:
    for i in range(start_id, start_id + n):
        conn.execute(
            "INSERT INTO visits (id, site, device, device_key, randomized, first_seen, last_seen, dwell_s, inside_s,"
            " class, long_stay, best_sensor, sensors, n_sensor_visits, day, hour)"
            " VALUES (?, 'shop', 'd', 'k', 0, ?, ?, 60, 60, 'visitor', 0, 's1', 's1', 1, ?, 10)",
            (i, first_seen, first_seen + 60, day),
        )
        conn.execute(
            "INSERT INTO sensor_visits (id, site, sensor, device, randomized, first_seen, last_seen, dwell_s,"
            " inside_s, sightings, class, long_stay, fingerprint, ie_ids, received, visit_id)"
            " VALUES (?, 'shop', 's1', 'd', 0, ?, ?, 60, 60, 3, 'visitor', 0, 'f', '', ?, ?)",
            (f"sv{i}", first_seen, first_seen + 60, first_seen + 700, i),
        )
    conn.commit()


def test_retention_does_not_lower_the_visits_counter(tmp_path):
    conn = store.connect(tmp_path / "hub.db")
    config = HubConfig(site="shop")
    now = time.time()
    old = now - (config.retention.raw_days + 5) * 86400
    conn.execute(
        "INSERT INTO devices (device_key, randomized, first_seen, last_seen, visit_count, total_dwell_s,"
        " first_visitor_day) VALUES ('k', 0, ?, ?, 6, 360, ?)",
        (old, now, datetime.fromtimestamp(old, UTC).date().isoformat()),
    )
    _visit_rows(conn, datetime.fromtimestamp(old, UTC).date().isoformat(), old, 3, 1)
    _visit_rows(conn, datetime.fromtimestamp(now, UTC).date().isoformat(), now - 3600, 2, 4)
    before = parse_exposition(prometheus.exposition(conn, now=now))
    assert value(before, "footfall_sensor_visits_total") == 5
    assert value(before, "footfall_sensor_visits_stored") == 5

    assert retention.apply(conn, config, now=now).sensor_visits_deleted == 3
    after = parse_exposition(prometheus.exposition(conn, now=now))
    assert value(after, "footfall_sensor_visits_total") == 5
    assert value(after, "footfall_sensor_visits_stored") == 2
    _visit_rows(conn, datetime.fromtimestamp(now, UTC).date().isoformat(), now - 1800, 1, 6)
    later = parse_exposition(prometheus.exposition(conn, now=now))
    assert value(later, "footfall_sensor_visits_total") == 6


def test_certificate_and_crl_expiry_from_real_files(tmp_path):
    site_dir = tmp_path / "site"
    provision.init_site(site_dir, "shop", ["hub.lan"])
    hub_dir = site_dir / "hub"
    # The CRL installed beside the hub's ca.pem (docs/operator-guide.md), where the hub can read it.
    (hub_dir / "crl.pem").write_bytes((site_dir / "ca" / "crl.pem").read_bytes())
    config = HubConfig(site="shop", db=str(tmp_path / "hub.db"))
    config.mqtt.tls = True
    config.mqtt.ca_certs = str(hub_dir / "ca.pem")
    config.mqtt.certfile = str(hub_dir / "footfall-hub.crt")
    conn = store.connect(config.db)

    fams = parse_exposition(prometheus.exposition(conn, sources=MonitorSources.from_config(config, env={})))
    hub_cert = x509.load_pem_x509_certificate((hub_dir / "footfall-hub.crt").read_bytes())
    ca_cert = x509.load_pem_x509_certificate((hub_dir / "ca.pem").read_bytes())
    crl = x509.load_pem_x509_crl((hub_dir / "crl.pem").read_bytes())
    expiry = "footfall_cert_expiry_timestamp_seconds"
    assert value(fams, expiry, role="client", file=hub_dir / "footfall-hub.crt") == (
        hub_cert.not_valid_after_utc.timestamp()
    )
    assert value(fams, expiry, role="ca") == ca_cert.not_valid_after_utc.timestamp()
    assert value(fams, "footfall_crl_next_update_timestamp_seconds", role="hub", file=hub_dir / "crl.pem") == (
        crl.next_update_utc.timestamp()
    )
    assert fams["footfall_monitor_file_error"]["samples"] == []

    # The site directory adds its own CA and both CRL copies; a CRL that is not there is an error.
    (site_dir / "broker" / "crl.pem").unlink()
    with_site = MonitorSources.from_config(config, env={"FOOTFALL_SITE_DIR": str(site_dir)})
    fams = parse_exposition(prometheus.exposition(conn, sources=with_site))
    assert value(fams, expiry, role="site_ca") == ca_cert.not_valid_after_utc.timestamp()
    assert value(fams, "footfall_crl_next_update_timestamp_seconds", role="site") == crl.next_update_utc.timestamp()
    assert value(fams, "footfall_monitor_file_error", role="broker", kind="crl") == 1

    # No TLS files configured: nothing to report, and no error either.
    fams = parse_exposition(prometheus.exposition(conn, sources=MonitorSources.from_config(HubConfig(), env={})))
    assert fams["footfall_cert_expiry_timestamp_seconds"]["samples"] == []
    assert fams["footfall_crl_next_update_timestamp_seconds"]["samples"] == []
    assert fams["footfall_monitor_file_error"]["samples"] == []


def test_expiring_certificate_is_seen_within_the_alert_window(tmp_path):
    key = provision_ca.new_key()
    ca_cert = provision_ca.make_ca("shop", key, days=10)  # expires inside the 14-day alert window
    (tmp_path / "ca.pem").write_bytes(provision_ca.cert_pem(ca_cert))
    (tmp_path / "crl.pem").write_bytes(provision_ca.crl_pem(provision_ca.make_crl(ca_cert, key, [], days=3)))
    (tmp_path / "hub.crt").write_text("not a certificate")
    config = HubConfig(site="shop")
    config.mqtt.ca_certs = str(tmp_path / "ca.pem")
    config.mqtt.certfile = str(tmp_path / "hub.crt")
    conn = store.connect(tmp_path / "hub.db")
    now = time.time()
    fams = parse_exposition(prometheus.exposition(conn, now=now, sources=MonitorSources.from_config(config, env={})))
    left = value(fams, "footfall_cert_expiry_timestamp_seconds", role="ca") - now
    assert 9 * 86400 < left < 14 * 86400
    assert value(fams, "footfall_crl_next_update_timestamp_seconds", role="hub") - now < 4 * 86400
    assert value(fams, "footfall_monitor_file_error", role="client", kind="cert", error="unparsable") == 1


def test_hub_liveness(tmp_path):
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    now = time.time()
    fams = parse_exposition(prometheus.exposition(conn, now=now))
    # Nothing ever ingested: 0, so "time() - last ingest > 15 min" fires.
    assert value(fams, "footfall_hub_last_ingest_timestamp_seconds") == 0
    assert "footfall_hub_mqtt_connected" not in fams  # ingest has not run: nothing claimed
    assert value(fams, "footfall_hub_disk_free_bytes", path=tmp_path) > 0
    assert value(fams, "footfall_hub_disk_size_bytes", path=tmp_path) >= value(
        fams, "footfall_hub_disk_free_bytes", path=tmp_path
    )
    assert value(fams, "footfall_hub_database_bytes", path=db) > 0

    ingest_many(conn, [_status("s1", "online", now)], HubConfig(site="shop"))
    last = conn.execute("SELECT last_message FROM sensors").fetchone()[0]
    fams = parse_exposition(prometheus.exposition(conn, now=now))
    assert value(fams, "footfall_hub_last_ingest_timestamp_seconds") == last > now - 60

    # What ingest writes (hub/monitor.py), /metrics shows.
    monitor.record_status(conn, monitor.STATUS_MQTT_CONNECTED, 0, now - 60)
    monitor.record_status(conn, monitor.STATUS_MQTT_CONNECTED, 1, now - 5)
    monitor.record_status(conn, monitor.STATUS_HEARTBEAT, now - 1, now - 1)
    conn.commit()
    fams = parse_exposition(prometheus.exposition(conn, now=now))
    assert value(fams, "footfall_hub_mqtt_connected") == 1
    assert value(fams, "footfall_hub_mqtt_connected_changed_timestamp_seconds") == now - 5
    assert value(fams, "footfall_hub_ingest_heartbeat_timestamp_seconds") == now - 1


def test_serve_config_gives_metrics_the_roster_and_files(tmp_path):
    toml = tmp_path / "hub.toml"
    toml.write_text(
        f'site = "shop"\ndb = "{tmp_path / "hub.db"}"\nsensors = ["s1", "s2"]\n'
        f'[mqtt]\ntls = true\nca_certs = "{tmp_path / "ca.pem"}"\ncertfile = "{tmp_path / "hub.crt"}"\n'
    )
    args = argparse.Namespace(config=toml, db=None, tz=None)
    *_, sources = serve._resolve(args)
    assert sources is not None and sources.site == "shop" and sources.sensors == ("s1", "s2")
    assert dict((role, p) for role, p in sources.certs) == {"client": tmp_path / "hub.crt", "ca": tmp_path / "ca.pem"}
