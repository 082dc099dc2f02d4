"""Provisioning operations on one site directory: init, add, rotate, revoke, reconfigure the hub.

Layout of ``site_dir`` (keep it offline or on the hub, mode 0700; never in git)::

    site.json               issued certificates, expiry, password hashes (no keys, no passwords)
    ca/ca.key ca/ca.pem     the site CA (key optionally encrypted with a passphrase)
    ca/hash.key             the site's device-id HMAC secret (hex), shipped to every sensor
    ca/bridge.pass          the central broker password, if the bridge uses one
    broker/                 mosquitto.conf passwd acl ca.pem server.crt server.key crl.pem roster.json -> hub
    hub/                    the hub's MQTT client bundle
    sensors/<id>/           one sensor's bundle -> that sensor's /etc/footfall
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from pathlib import Path

from cryptography import x509

from footfall import topics
from footfall.tools.provision import ca, mosquitto
from footfall.tools.provision.bundle import AgentSettings, write_hub_bundle, write_sensor_bundle
from footfall.tools.provision.files import PUBLIC_MODE, ensure_dir, write_file
from footfall.tools.provision.state import ROSTER_FILE, STATE_FILE, SiteState, load, save

LOCAL_HOSTS = ("localhost", "127.0.0.1")  # the hub's own client connects locally


class ProvisionError(RuntimeError):
    """A refused operation, with a message for the operator."""


def _paths(site_dir: Path) -> dict[str, Path]:
    return {
        "ca_key": site_dir / "ca" / "ca.key",
        "ca_pem": site_dir / "ca" / "ca.pem",
        "hash_key": site_dir / "ca" / "hash.key",
        "bridge_pass": site_dir / "ca" / "bridge.pass",
        "broker": site_dir / "broker",
        "hub": site_dir / "hub",
        "sensors": site_dir / "sensors",
    }


def _load_ca(site_dir: Path, passphrase: bytes | None) -> tuple[x509.Certificate, ca.PrivateKey]:
    p = _paths(site_dir)
    return ca.load_cert(p["ca_pem"].read_bytes()), ca.load_key(p["ca_key"].read_bytes(), passphrase)


def _cert_record(cert: x509.Certificate) -> dict:
    return ca.Issued.of(cert).as_dict()


def _broker_config(state: SiteState) -> mosquitto.BrokerConfig:
    known = mosquitto.BrokerConfig.__dataclass_fields__
    # A site made by an older version lacks newer options: their defaults apply.
    return mosquitto.BrokerConfig(**{k: v for k, v in state.broker.items() if k in known})


def _bridge(site_dir: Path, state: SiteState) -> mosquitto.Bridge | None:
    if not state.bridge:
        return None
    secret = _paths(site_dir)["bridge_pass"]
    password = secret.read_text().strip() if secret.exists() else None
    return mosquitto.Bridge(**state.bridge, remote_password=password)


def render_broker(site_dir: Path, state: SiteState) -> Path:
    """Rewrite passwd, acl and mosquitto.conf from the state; needs no CA key."""
    out = ensure_dir(_paths(site_dir)["broker"])
    users = [(mosquitto.HUB_USER, state.hub["password_hash"])]
    users += [(s, state.sensors[s]["password_hash"]) for s in state.active_sensors()]
    write_file(out / "passwd", mosquitto.passwd_text(users))
    write_file(out / "acl", mosquitto.acl_text(state.site, state.active_sensors()))
    # Public (no secrets) so the hub's own user can read its copy in /etc/footfall.
    write_file(out / ROSTER_FILE, state.roster_json(), PUBLIC_MODE)
    bridge = _bridge(site_dir, state)
    write_file(out / "mosquitto.conf", mosquitto.conf_text(state.site, _broker_config(state), bridge))
    return out


def _write_crl(
    site_dir: Path, state: SiteState, ca_cert: x509.Certificate, ca_key: ca.PrivateKey, days: int = 365
) -> None:
    revoked = [(int(r["serial"], 16), dt.datetime.fromisoformat(r["revoked_at"])) for r in state.revoked]
    crl = ca.make_crl(ca_cert, ca_key, revoked, days=days)
    pem = ca.crl_pem(crl)
    write_file(site_dir / "ca" / "crl.pem", pem, PUBLIC_MODE)
    write_file(_paths(site_dir)["broker"] / "crl.pem", pem)
    state.crl = {
        "last_update": crl.last_update_utc.isoformat(),
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
        "entries": len(revoked),
    }


def _revoke_serial(state: SiteState, record: dict, subject: str, reason: str) -> None:
    state.revoked.append(
        {
            "serial": record["serial"],
            "revoked_at": ca.now().replace(microsecond=0).isoformat(),
            "reason": reason,
            "subject": subject,
        }
    )


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


def init_site(
    site_dir: Path,
    site: str,
    hosts: list[str],
    *,
    broker: mosquitto.BrokerConfig | None = None,
    bridge: mosquitto.Bridge | None = None,
    key_type: str = "ec",
    agent_dir: str = "/etc/footfall",
    passphrase: bytes | None = None,
    hash_key_hex: str | None = None,
    ca_days: int = 3650,
    cert_days: int = 825,
) -> SiteState:
    """Create the site CA, the broker certificate, the hub identity and the broker files."""
    topics.check_id(site, "site")
    if (site_dir / STATE_FILE).exists():
        raise ProvisionError(f"{site_dir} already holds a site; use add-sensor, rotate, revoke or hub")
    if not hosts:
        raise ProvisionError("give the hub's host name(s) or IP address(es) that sensors will connect to")
    if key_type not in ca.KEY_TYPES:
        raise ProvisionError(f"key type must be one of {ca.KEY_TYPES}")
    if hash_key_hex is not None:
        try:
            if len(bytes.fromhex(hash_key_hex.strip())) < 16:
                raise ProvisionError("the hash key must be at least 16 bytes (32 hex digits)")
        except ValueError:
            raise ProvisionError("the hash key file must hold hex digits") from None
    broker = broker or mosquitto.BrokerConfig()
    if broker.use_identity_as_username and not broker.require_certificate:
        raise ProvisionError("use_identity_as_username needs require_certificate (mutual TLS)")
    ensure_dir(site_dir)
    p = _paths(site_dir)
    ensure_dir(p["ca_key"].parent)

    ca_key = ca.new_key(key_type)
    ca_cert = ca.make_ca(site, ca_key, ca_days)
    write_file(p["ca_key"], ca.key_pem(ca_key, passphrase))
    write_file(p["ca_pem"], ca.cert_pem(ca_cert), PUBLIC_MODE)
    # The device-id secret is per site unless the chain supplies one (then ids match across stores).
    write_file(p["hash_key"], (hash_key_hex or secrets.token_hex(32)).strip() + "\n")

    state = SiteState(site=site, key_type=key_type, hosts=list(hosts), broker=broker.as_dict(), agent_dir=agent_dir)
    state.ca = _cert_record(ca_cert)
    if bridge is not None:
        _set_bridge(site_dir, state, bridge)
    _issue_server(site_dir, state, ca_cert, ca_key, cert_days)
    _issue_hub(site_dir, state, ca_cert, ca_key, cert_days)
    _write_crl(site_dir, state, ca_cert, ca_key)
    render_broker(site_dir, state)
    save(site_dir, state)
    return state


def _set_bridge(site_dir: Path, state: SiteState, bridge: mosquitto.Bridge) -> None:
    state.bridge = bridge.as_dict()
    secret = _paths(site_dir)["bridge_pass"]
    if bridge.remote_password:
        write_file(secret, bridge.remote_password + "\n")
    else:
        secret.unlink(missing_ok=True)


def add_sensor(
    site_dir: Path,
    sensor: str,
    *,
    settings: AgentSettings | None = None,
    passphrase: bytes | None = None,
    days: int = 825,
) -> Path:
    """Issue a certificate and password for a new sensor; returns its bundle directory."""
    topics.check_id(sensor, "sensor")
    if sensor == mosquitto.HUB_USER:
        raise ProvisionError(f"{sensor!r} is the hub's MQTT user; pick another sensor id")
    state = load(site_dir)
    if state.sensors.get(sensor, {}).get("status") == "active":
        raise ProvisionError(f"sensor {sensor!r} already exists; use `rotate` for new credentials")
    settings = settings or AgentSettings()
    bundle = _issue_sensor(site_dir, state, sensor, settings, passphrase, days)
    render_broker(site_dir, state)
    save(site_dir, state)
    return bundle


def _issue_sensor(
    site_dir: Path,
    state: SiteState,
    sensor: str,
    settings: AgentSettings,
    passphrase: bytes | None,
    days: int,
) -> Path:
    ca_cert, ca_key = _load_ca(site_dir, passphrase)
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


def rotate(site_dir: Path, sensor: str, *, passphrase: bytes | None = None, days: int = 825) -> Path:
    """New key, certificate and password for a sensor; the old certificate goes into the CRL.

    ``sensor`` may be ``footfall-hub`` to rotate the hub's own client identity.
    """
    state = load(site_dir)
    ca_cert, ca_key = _load_ca(site_dir, passphrase)
    if sensor == mosquitto.HUB_USER:
        _revoke_serial(state, state.hub["cert"], sensor, "superseded")
        _issue_hub(site_dir, state, ca_cert, ca_key, days)
        out = _paths(site_dir)["hub"]
    else:
        rec = state.sensor(sensor)
        if rec.get("status") != "active":
            raise ProvisionError(f"sensor {sensor!r} is revoked; use add-sensor to bring it back")
        _revoke_serial(state, rec["cert"], sensor, "superseded")
        out = _issue_sensor(site_dir, state, sensor, AgentSettings(**rec.get("settings", {})), passphrase, days)
    _write_crl(site_dir, state, ca_cert, ca_key)
    render_broker(site_dir, state)
    save(site_dir, state)
    return out


def revoke(site_dir: Path, sensor: str, *, passphrase: bytes | None = None, reason: str = "retired") -> None:
    """Remove a sensor from passwd and ACL, put its certificate in the CRL, delete its bundle."""
    state = load(site_dir)
    rec = state.sensor(sensor)
    if rec.get("status") != "active":
        raise ProvisionError(f"sensor {sensor!r} is already revoked")
    ca_cert, ca_key = _load_ca(site_dir, passphrase)
    _revoke_serial(state, rec["cert"], sensor, reason)
    rec["status"] = "revoked"
    rec["revoked_at"] = ca.now().replace(microsecond=0).isoformat()
    rec.pop("password_hash", None)
    _write_crl(site_dir, state, ca_cert, ca_key)
    render_broker(site_dir, state)
    save(site_dir, state)
    # The bundle's key and password are dead now; do not leave them lying around.
    shutil.rmtree(_paths(site_dir)["sensors"] / sensor, ignore_errors=True)


# A CRL that expires soon locks every sensor out of the broker when nobody re-signs it in
# time: a month leaves room for a missed renewal (crl --days 0 once wrote one already expired).
MIN_CRL_DAYS = 30


def refresh_crl(site_dir: Path, *, passphrase: bytes | None = None, days: int = 365) -> SiteState:
    """Re-sign the CRL before its next_update: an expired CRL makes Mosquitto refuse everyone."""
    if days < MIN_CRL_DAYS:
        raise ProvisionError(
            f"a CRL valid for {days} days would lock every sensor out when it lapses; use --days {MIN_CRL_DAYS} or more"
        )
    state = load(site_dir)
    ca_cert, ca_key = _load_ca(site_dir, passphrase)
    _write_crl(site_dir, state, ca_cert, ca_key, days)
    save(site_dir, state)
    return state


def configure_hub(
    site_dir: Path,
    *,
    hosts: list[str] | None = None,
    port: int | None = None,
    require_certificate: bool | None = None,
    use_identity_as_username: bool | None = None,
    persistence_location: str | None = None,
    log_dest: list[str] | None = None,
    bridge: mosquitto.Bridge | None = None,
    no_bridge: bool = False,
    rotate_server: bool = False,
    passphrase: bytes | None = None,
    days: int = 825,
) -> SiteState:
    """Change broker settings; new host names re-issue the server certificate."""
    state = load(site_dir)
    cfg = state.broker
    for name, value in (
        ("port", port),
        ("require_certificate", require_certificate),
        ("use_identity_as_username", use_identity_as_username),
        ("persistence_location", persistence_location),
        ("log_dest", log_dest),
    ):
        if value is not None:
            cfg[name] = value
    if cfg["use_identity_as_username"] and not cfg["require_certificate"]:
        raise ProvisionError("use_identity_as_username needs require_certificate (mutual TLS)")
    if no_bridge:
        state.bridge = None
        _paths(site_dir)["bridge_pass"].unlink(missing_ok=True)
    elif bridge is not None:
        _set_bridge(site_dir, state, bridge)
    if hosts and list(hosts) != state.hosts:
        state.hosts = list(hosts)
        rotate_server = True
    if rotate_server:
        ca_cert, ca_key = _load_ca(site_dir, passphrase)
        _revoke_serial(state, state.server, "broker", "superseded")
        _issue_server(site_dir, state, ca_cert, ca_key, days)
        _write_crl(site_dir, state, ca_cert, ca_key)
    render_broker(site_dir, state)
    save(site_dir, state)
    return state
