"""Issuing identities: a certificate and password for the hub, the sync job, the broker, a sensor.

Each writes its files (a ``bundle``, or the broker's server certificate) and records the
certificate in the site state; the caller saves the state and re-renders the broker files.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from footfall.tools.provision import ca, mosquitto
from footfall.tools.provision.bundle import (
    AgentSettings,
    write_hub_bundle,
    write_sensor_bundle,
    write_sync_identity,
)
from footfall.tools.provision.files import ensure_dir, write_file
from footfall.tools.provision.sitedir import _load_ca, _paths
from footfall.tools.provision.state import SiteState

LOCAL_HOSTS = ("localhost", "127.0.0.1")  # the hub's own client connects locally


def _cert_record(cert: x509.Certificate) -> dict:
    return ca.Issued.of(cert).as_dict()


def _issue_hub(site_dir: Path, state: SiteState, ca_cert: x509.Certificate, ca_key: ca.PrivateKey, days: int) -> None:
    key = ca.new_key(state.key_type)
    cert = ca.issue_client(ca_cert, ca_key, key, state.site, mosquitto.HUB_USER, days)
    password = mosquitto.new_password()
    state.hub = {
        "username": mosquitto.HUB_USER,
        "cert": _cert_record(cert),
        "password_hash": mosquitto.hash_password(password),
        "issued_at": ca.now().replace(microsecond=0).isoformat(),
    }
    write_hub_bundle(
        _paths(site_dir)["hub"],
        site=state.site,
        username=mosquitto.HUB_USER,
        port=state.broker["port"],
        hub_dir=state.agent_dir,
        ca_pem=ca.cert_pem(ca_cert),
        cert_pem=ca.cert_pem(cert),
        key_pem=ca.key_pem(key),
        password=password,
        sync_username=mosquitto.SYNC_USER if state.sync else None,
    )


def _issue_sync(site_dir: Path, state: SiteState, ca_cert: x509.Certificate, ca_key: ca.PrivateKey, days: int) -> None:
    """The sync job's identity (certificate CN footfall-sync, password), written beside the hub's."""
    key = ca.new_key(state.key_type)
    cert = ca.issue_client(ca_cert, ca_key, key, state.site, mosquitto.SYNC_USER, days)
    password = mosquitto.new_password()
    state.sync = {
        "username": mosquitto.SYNC_USER,
        "cert": _cert_record(cert),
        "password_hash": mosquitto.hash_password(password),
        "issued_at": ca.now().replace(microsecond=0).isoformat(),
    }
    write_sync_identity(
        _paths(site_dir)["hub"],
        site=state.site,
        hub_username=mosquitto.HUB_USER,
        username=mosquitto.SYNC_USER,
        port=state.broker["port"],
        hub_dir=state.agent_dir,
        cert_pem=ca.cert_pem(cert),
        key_pem=ca.key_pem(key),
        password=password,
    )


def _issue_server(
    site_dir: Path, state: SiteState, ca_cert: x509.Certificate, ca_key: ca.PrivateKey, days: int
) -> None:
    hosts = list(dict.fromkeys([*state.hosts, *LOCAL_HOSTS]))
    key = ca.new_key(state.key_type)
    cert = ca.issue_server(ca_cert, ca_key, key, state.site, hosts, days)
    out = ensure_dir(_paths(site_dir)["broker"])
    write_file(out / "server.crt", ca.cert_pem(cert))
    write_file(out / "server.key", ca.key_pem(key))
    write_file(out / "ca.pem", ca.cert_pem(ca_cert))
    state.server = {**_cert_record(cert), "hosts": hosts}


def _issue_sensor(
    site_dir: Path,
    state: SiteState,
    sensor: str,
    settings: AgentSettings,
    passphrase: bytes | None,
    days: int,
    ca_pair: tuple[x509.Certificate, ca.PrivateKey] | None = None,
) -> Path:
    # A re-issue of every sensor decrypts the CA key once, not once per sensor.
    ca_cert, ca_key = ca_pair or _load_ca(site_dir, passphrase)
    key = ca.new_key(state.key_type)
    cert = ca.issue_client(ca_cert, ca_key, key, state.site, sensor, days)
    password = mosquitto.new_password()
    previous = state.sensors.get(sensor, {})
    state.sensors[sensor] = {
        "status": "active",
        "cert": _cert_record(cert),
        "password_hash": mosquitto.hash_password(password),
        "issued_at": ca.now().replace(microsecond=0).isoformat(),
        "settings": settings.__dict__,
        "history": [*previous.get("history", []), *([previous["cert"]["serial"]] if "cert" in previous else [])],
    }
    return write_sensor_bundle(
        _paths(site_dir)["sensors"] / sensor,
        site=state.site,
        sensor=sensor,
        host=state.hosts[0],
        port=state.broker["port"],
        agent_dir=state.agent_dir,
        settings=settings,
        ca_pem=ca.cert_pem(ca_cert),
        cert_pem=ca.cert_pem(cert),
        key_pem=ca.key_pem(key),
        password=password,
        hash_key_hex=_paths(site_dir)["hash_key"].read_text().strip(),
    )
