"""Provisioning operations on one site directory: init, add, rotate, revoke, reconfigure the hub.

Layout of ``site_dir`` (keep it offline or on the hub, mode 0700; never in git)::

    site.json               issued certificates, expiry, password hashes (no keys, no passwords)
    ca/ca.key ca/ca.pem     the site CA (key encrypted with a passphrase unless init-site was told not to)
    ca/hash.key             the site's device-id HMAC secret (hex), shipped to every sensor (rotate-hash-key)
    ca/bridge.pass          the central broker password, if the bridge uses one
    broker/                 mosquitto.conf passwd acl ca.pem server.crt server.key crl.pem roster.json -> hub
    hub/                    the hub's MQTT client bundle: ingest (footfall-hub) and sync (footfall-sync)
    sensors/<id>/           one sensor's bundle -> that sensor's /etc/footfall
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from footfall import topics
from footfall.tools.provision import ca, mosquitto
from footfall.tools.provision.bundle import AgentSettings
from footfall.tools.provision.credentials import _cert_record, _issue_hub, _issue_sensor, _issue_server, _issue_sync
from footfall.tools.provision.crl import _revoke_serial, _write_crl
from footfall.tools.provision.files import PUBLIC_MODE, ensure_dir, write_file
from footfall.tools.provision.sitedir import PASSPHRASE_HINT, ProvisionError, _load_ca, _paths
from footfall.tools.provision.state import ROSTER_FILE, STATE_FILE, SiteState, load, save


def _check_hash_key(hash_key_hex: str) -> str:
    try:
        raw = bytes.fromhex(hash_key_hex.strip())
    except ValueError:
        raise ProvisionError("the hash key file must hold hex digits") from None
    if len(raw) < 16:
        raise ProvisionError("the hash key must be at least 16 bytes (32 hex digits)")
    return raw.hex()


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
    if state.sync:
        users.append((mosquitto.SYNC_USER, state.sync["password_hash"]))
    users += [(s, state.sensors[s]["password_hash"]) for s in state.active_sensors()]
    write_file(out / "passwd", mosquitto.passwd_text(users))
    sync_user = mosquitto.SYNC_USER if state.sync else None
    write_file(out / "acl", mosquitto.acl_text(state.site, state.active_sensors(), sync_user=sync_user))
    # Public (no secrets) so the hub's own user can read its copy in /etc/footfall.
    write_file(out / ROSTER_FILE, state.roster_json(), PUBLIC_MODE)
    bridge = _bridge(site_dir, state)
    write_file(out / "mosquitto.conf", mosquitto.conf_text(state.site, _broker_config(state), bridge))
    return out


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
    """Create the site CA, the broker certificate, the hub and sync identities and the broker files.

    ``passphrase`` None leaves the CA key unencrypted; the CLI refuses that unless told
    ``--no-ca-passphrase``. ``broker`` defaults to mutual TLS with the certificate CN as username.
    """
    topics.check_id(site, "site")
    if (site_dir / STATE_FILE).exists():
        raise ProvisionError(f"{site_dir} already holds a site; use add-sensor, rotate, revoke or hub")
    if not hosts:
        raise ProvisionError("give the hub's host name(s) or IP address(es) that sensors will connect to")
    if key_type not in ca.KEY_TYPES:
        raise ProvisionError(f"key type must be one of {ca.KEY_TYPES}")
    if hash_key_hex is not None:
        hash_key_hex = _check_hash_key(hash_key_hex)
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
    write_file(p["hash_key"], (hash_key_hex or secrets.token_hex(32)) + "\n")

    state = SiteState(site=site, key_type=key_type, hosts=list(hosts), broker=broker.as_dict(), agent_dir=agent_dir)
    state.hash_key = _hash_key_record("chain" if hash_key_hex else "site", [])
    state.ca = _cert_record(ca_cert)
    if bridge is not None:
        _set_bridge(site_dir, state, bridge)
    _issue_server(site_dir, state, ca_cert, ca_key, cert_days)
    _issue_hub(site_dir, state, ca_cert, ca_key, cert_days)
    _issue_sync(site_dir, state, ca_cert, ca_key, cert_days)
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
    if sensor in mosquitto.SERVICE_USERS:
        raise ProvisionError(f"{sensor!r} is one of the hub's MQTT users; pick another sensor id")
    state = load(site_dir)
    if state.sensors.get(sensor, {}).get("status") == "active":
        raise ProvisionError(f"sensor {sensor!r} already exists; use `rotate` for new credentials")
    settings = settings or AgentSettings()
    bundle = _issue_sensor(site_dir, state, sensor, settings, passphrase, days)
    render_broker(site_dir, state)
    save(site_dir, state)
    return bundle


def rotate(site_dir: Path, sensor: str, *, passphrase: bytes | None = None, days: int = 825) -> Path:
    """New key, certificate and password for a sensor; the old certificate goes into the CRL.

    ``sensor`` may be ``footfall-hub`` (the hub ingest's identity) or ``footfall-sync`` (the sync
    job's); both are written to the hub bundle.
    """
    state = load(site_dir)
    if sensor == mosquitto.SYNC_USER and not state.sync:
        raise ProvisionError(f"this site has no {sensor} identity yet: `footfall provision hub` issues it")
    ca_cert, ca_key = _load_ca(site_dir, passphrase)
    if sensor == mosquitto.HUB_USER:
        _revoke_serial(state, state.hub["cert"], sensor, "superseded")
        _issue_hub(site_dir, state, ca_cert, ca_key, days)
        out = _paths(site_dir)["hub"]
    elif sensor == mosquitto.SYNC_USER:
        _revoke_serial(state, state.sync["cert"], sensor, "superseded")
        _issue_sync(site_dir, state, ca_cert, ca_key, days)
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


def _hash_key_record(source: str, history: list[dict]) -> dict:
    return {"source": source, "since": ca.now().replace(microsecond=0).isoformat(), "history": history}


def rotate_hash_key(
    site_dir: Path,
    *,
    passphrase: bytes | None = None,
    hash_key_hex: str | None = None,
    days: int = 825,
) -> list[Path]:
    """A new device-id key for the site, and every active sensor's bundle re-issued with it.

    The answer to a stolen sensor (revoke it, then this): its bundle held the key, with which
    anyone can test a guessed MAC against the site's device ids. Each sensor also gets a new
    certificate and password (the old ones go into the CRL), as with ``rotate``, so every
    bundle is new and none can be left behind with the old key. Devices get new ids from the
    moment a sensor runs with the new key; see docs/operator-guide.md ("Device-id key").
    ``hash_key_hex`` is a chain-wide key given by the chain; None makes a new per-site one.
    """
    state = load(site_dir)
    p = _paths(site_dir)
    new_key = _check_hash_key(hash_key_hex) if hash_key_hex is not None else secrets.token_hex(32)
    old_key = p["hash_key"].read_text().strip() if p["hash_key"].exists() else ""
    if old_key and bytes.fromhex(new_key) == bytes.fromhex(old_key):
        raise ProvisionError("that is the site's current hash key: give a new one (or none for a random one)")
    ca_cert, ca_key = _load_ca(site_dir, passphrase)  # before any change: a wrong passphrase changes nothing
    write_file(p["hash_key"], new_key + "\n")
    previous = dict(state.hash_key or {"source": "unknown"})
    history = [*previous.pop("history", []), previous]
    state.hash_key = _hash_key_record("chain" if hash_key_hex is not None else "site", history)
    bundles = []
    for sensor in state.active_sensors():
        rec = state.sensors[sensor]
        _revoke_serial(state, rec["cert"], sensor, "superseded")
        settings = AgentSettings(**rec.get("settings", {}))
        bundles.append(_issue_sensor(site_dir, state, sensor, settings, passphrase, days, ca_pair=(ca_cert, ca_key)))
    _write_crl(site_dir, state, ca_cert, ca_key)
    render_broker(site_dir, state)
    save(site_dir, state)
    return bundles


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
    """Change broker settings; new host names re-issue the server certificate.

    A site made before the sync had its own MQTT identity gets it here (which needs the CA key):
    footfall-sync in passwd and ACL, its files in ``hub/`` and ``[sync_mqtt]`` in hub.toml.
    """
    state = load(site_dir)
    if not state.sync and b"ENCRYPTED" in _paths(site_dir)["ca_key"].read_bytes() and not passphrase:
        # Said before anything changes, and why this step wants the CA key at all.
        raise ProvisionError(
            f"this site has no {mosquitto.SYNC_USER} MQTT identity yet (made before the sync had its own): "
            f"give the CA passphrase ({PASSPHRASE_HINT}) so that this issues it; docs/operator-guide.md, "
            "'Upgrading a site: the sync's MQTT identity'"
        )
    cfg = state.broker
    if use_identity_as_username is None and require_certificate is not None:
        # Switching mutual TLS on ties each certificate to its username unless told otherwise;
        # switching it off has to drop the identity too (it needs a certificate).
        if not require_certificate:
            use_identity_as_username = False
        elif not cfg.get("require_certificate"):
            use_identity_as_username = True
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
    if rotate_server or not state.sync:
        ca_cert, ca_key = _load_ca(site_dir, passphrase)
        if rotate_server:
            _revoke_serial(state, state.server, "broker", "superseded")
            _issue_server(site_dir, state, ca_cert, ca_key, days)
            _write_crl(site_dir, state, ca_cert, ca_key)
        if not state.sync:
            _issue_sync(site_dir, state, ca_cert, ca_key, days)
    render_broker(site_dir, state)
    save(site_dir, state)
    return state
