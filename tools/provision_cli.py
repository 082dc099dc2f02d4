"""``footfall provision ...``: the command-line face of ``footfall.tools.provision``.

``tools/cli.py`` calls ``register_provision(sub)``; every subcommand works on one site directory
(``--dir``, or ``$FOOTFALL_SITE_DIR``) and prints what to copy where next.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from footfall.tools import provision as pv
from footfall.tools.provision import dashboard_cert
from footfall.tools.provision.crl import MIN_CRL_DAYS

PASSPHRASE_ENV = "FOOTFALL_CA_PASSPHRASE"
SITE_DIR_ENV = "FOOTFALL_SITE_DIR"
RELOAD_HINT = (
    "next: copy {broker}/ to the hub's broker directory and run `systemctl reload mosquitto` "
    "(docs/operator-guide.md, 'Day-2 operations')"
)


OPENWRT_HINT = (
    "OpenWrt: with footfall-sensor.tgz, firmware_configs/openwrt/footfall-agent.init and footfall.uci "
    "(firmware_configs/openwrt/README.md, 'Install'); opkg install the packages in packages.txt"
)


# A passphrase for a new CA key: long enough that guessing it offline (the key file copied
# off a stolen laptop or USB stick) is not the easy way in; a diceware phrase passes easily.
MIN_PASSPHRASE = 12


def _passphrase(args: argparse.Namespace) -> bytes | None:
    """From the file or the environment, never from the command line (shell history, ps)."""
    path = getattr(args, "ca_passphrase_file", None)
    if path:
        value = Path(path).read_text().strip()
        if not value:
            raise pv.ProvisionError(f"the passphrase file {path} is empty")
        return value.encode()
    value = os.environ.get(PASSPHRASE_ENV, "").strip()
    return value.encode() if value else None


def _new_ca_passphrase(args: argparse.Namespace) -> bytes | None:
    """init-site: a passphrase is required unless --no-ca-passphrase says otherwise, explicitly."""
    passphrase = _passphrase(args)
    if args.no_ca_passphrase:
        if passphrase is not None:
            source = args.ca_passphrase_file or f"${PASSPHRASE_ENV}"
            raise pv.ProvisionError(f"--no-ca-passphrase contradicts the passphrase given ({source}); drop one")
        return None
    if passphrase is None:
        raise pv.ProvisionError(
            f"the CA key is encrypted by default: give its passphrase in a file (--ca-passphrase-file FILE) "
            f"or in ${PASSPHRASE_ENV}, or pass --no-ca-passphrase to leave it unencrypted (then keep the "
            "site directory on encrypted storage)"
        )
    if len(passphrase) < MIN_PASSPHRASE:
        raise pv.ProvisionError(f"the CA passphrase must be at least {MIN_PASSPHRASE} characters")
    return passphrase


def _site_dir(args: argparse.Namespace) -> Path:
    value = args.dir or os.environ.get(SITE_DIR_ENV)
    if not value:
        raise pv.ProvisionError(f"give --dir or set {SITE_DIR_ENV}")
    return Path(value)


def _channels(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []  # stay on the radio's channel: no hopping
    try:
        channels = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"channels must be comma-separated numbers, not {text!r}") from None
    if not channels or any(not 1 <= c <= 196 for c in channels):
        raise argparse.ArgumentTypeError(f"channels must be Wi-Fi channel numbers, not {text!r}")
    return channels


def _bridge(args: argparse.Namespace) -> pv.Bridge | None:
    if not args.bridge_address:
        return None
    password = Path(args.bridge_password_file).read_text().strip() if args.bridge_password_file else None
    return pv.Bridge(
        address=args.bridge_address,
        remote_username=args.bridge_username,
        remote_password=password,
        cafile=args.bridge_cafile,
        certfile=args.bridge_certfile,
        keyfile=args.bridge_keyfile,
    )


def _add_common(p: argparse.ArgumentParser, *, ca: bool = True) -> None:
    p.add_argument("--dir", help=f"the site directory (default ${SITE_DIR_ENV}); keep it offline, never in git")
    if ca:
        p.add_argument("--ca-passphrase-file", help=f"file holding the CA key passphrase (or set ${PASSPHRASE_ENV})")


def _add_bridge_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bridge to a central broker (optional)")
    g.add_argument("--bridge-address", help="central broker host:port")
    g.add_argument("--bridge-username", help="this site's user on the central broker")
    g.add_argument("--bridge-password-file", help="file holding that user's password")
    g.add_argument("--bridge-cafile", help="central CA certificate, as installed on the hub (enables TLS)")
    g.add_argument("--bridge-certfile", help="client certificate for the central broker, on the hub")
    g.add_argument("--bridge-keyfile", help="its key, on the hub")


def _add_agent_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("agent settings written into agent.toml (defaults: the --platform's)")
    d = pv.AgentSettings()
    ow = pv.platform_settings("openwrt")
    g.add_argument(
        "--platform",
        choices=pv.PLATFORMS,
        default="linux",
        help="linux: Raspberry Pi OS / Debian under systemd (default); openwrt: a router under procd, "
        "no channel hopping and a small buffer in RAM (firmware_configs/openwrt/README.md)",
    )
    # Defaults are None so that a flag given overrides the platform's preset and one not given
    # does not (the operator need not remember OpenWrt's values).
    g.add_argument("--source", help=f"capture source (default {d.capture_source})")
    g.add_argument(
        "--channels",
        type=_channels,
        help="channels to hop, e.g. 1,6,11, or none to stay on the radio's channel "
        "(default linux: 1,6,11; openwrt: none)",
    )
    g.add_argument("--dwell", type=float, help=f"seconds per channel (default {d.dwell_s})")
    g.add_argument("--inside-rssi", type=int, help=f"dBm (default {d.inside_rssi})")
    g.add_argument("--min-inside", type=int, help=f"seconds (default {d.min_inside_s})")
    g.add_argument("--gap", type=int, help=f"seconds closing a visit (default {d.gap_s})")
    g.add_argument("--buffer-path", help=f"disk buffer on the device (default {d.buffer_path})")
    g.add_argument(
        "--buffer-max-bytes",
        type=int,
        help=f"buffer cap (default linux: {d.buffer_max_bytes}; openwrt: {ow.buffer_max_bytes}, in RAM)",
    )


def register_provision(sub: argparse._SubParsersAction) -> None:
    """Add ``footfall provision`` and its subcommands."""
    parser = sub.add_parser(
        "provision",
        help="site CA, sensor credentials, broker passwd/ACL/config",
        description="Create and maintain a site's certificates, passwords and Mosquitto configuration.",
    )
    psub = parser.add_subparsers(dest="provision_command", metavar="STEP", required=True)
    dashboard_cert.add_parser(psub)

    p = psub.add_parser("init-site", help="create the site CA, broker certificate, hub identity and broker files")
    _add_common(p)
    p.add_argument("--site", required=True, help="site id, e.g. store-042")
    p.add_argument(
        "--host", action="append", required=True, help="hub DNS name or IP the sensors connect to (repeatable)"
    )
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--bind", help="listen address (default: all interfaces)")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="ECDSA P-256 (default) or RSA 2048")
    p.add_argument(
        "--mtls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="require a site client certificate (default on); --no-mtls only for old clients that cannot hold one",
    )
    p.add_argument(
        "--identity-as-username",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the certificate CN is the MQTT username, tying each certificate to its user (default: on with --mtls)",
    )
    p.add_argument(
        "--no-ca-passphrase",
        action="store_true",
        help=f"leave the CA key unencrypted (default: encrypted with --ca-passphrase-file or ${PASSPHRASE_ENV})",
    )
    p.add_argument("--broker-dir", default="/etc/mosquitto/footfall", help="where broker files live on the hub")
    p.add_argument("--persistence-location", default="/var/lib/mosquitto/")
    p.add_argument("--agent-dir", default="/etc/footfall", help="where bundles are installed on devices")
    p.add_argument("--hash-key-file", help="use this chain-wide device-id key (hex) instead of a new per-site one")
    p.add_argument("--ca-days", type=int, default=3650)
    p.add_argument("--cert-days", type=int, default=825)
    _add_bridge_options(p)
    p.set_defaults(func=_init_site)

    p = psub.add_parser("add-sensor", help="issue a certificate and password; write the sensor's bundle")
    _add_common(p)
    p.add_argument("sensor", help="sensor id, e.g. s1")
    p.add_argument("--days", type=int, default=825)
    _add_agent_options(p)
    p.set_defaults(func=_add_sensor)

    p = psub.add_parser(
        "rotate", help=f"new key, certificate and password for a sensor (or {pv.HUB_USER}, {pv.SYNC_USER})"
    )
    _add_common(p)
    p.add_argument("sensor")
    p.add_argument("--days", type=int, default=825)
    p.set_defaults(func=_rotate)

    p = psub.add_parser("revoke", help="remove a sensor from passwd and ACL and put its certificate in the CRL")
    _add_common(p)
    p.add_argument("sensor")
    p.add_argument("--reason", default="retired", help="recorded in the site state (e.g. stolen, retired)")
    p.set_defaults(func=_revoke)

    p = psub.add_parser(
        "hub",
        help=f"change broker settings, bridge or host names; rewrite the broker files (and issue {pv.SYNC_USER} "
        "to a site made before it existed)",
    )
    _add_common(p)
    p.add_argument("--host", action="append", help="replace the hub host names (re-issues the server certificate)")
    p.add_argument("--port", type=int)
    p.add_argument("--mtls", action=argparse.BooleanOptionalAction, default=None, help="require client certs")
    p.add_argument("--identity-as-username", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--persistence-location")
    p.add_argument("--no-bridge", action="store_true", help="remove the bridge section")
    p.add_argument("--rotate-server", action="store_true", help="re-issue the broker's server certificate")
    p.add_argument("--days", type=int, default=825)
    _add_bridge_options(p)
    p.set_defaults(func=_hub)

    p = psub.add_parser("crl", help="re-sign the CRL (do it before next_update: an expired CRL locks out everyone)")
    _add_common(p)
    p.add_argument("--days", type=int, default=365, help=f"validity of the new CRL (at least {MIN_CRL_DAYS})")
    p.add_argument(
        "--if-expiring-within",
        type=float,
        metavar="DAYS",
        help="re-sign only when fewer than DAYS remain, otherwise do nothing (what footfall-crl-renew.timer runs)",
    )
    p.set_defaults(func=_crl)

    p = psub.add_parser(
        "rotate-hash-key",
        help="new device-id key; every sensor re-issued with it (devices get new ids: operator guide)",
    )
    _add_common(p)
    p.add_argument("--hash-key-file", help="the chain's new chain-wide key (hex) instead of a new per-site one")
    p.add_argument("--days", type=int, default=825, help="validity of the re-issued sensor certificates")
    p.set_defaults(func=_rotate_hash_key)

    p = psub.add_parser("list", help="sensors, certificates and their expiry")
    _add_common(p, ca=False)
    p.set_defaults(func=_list)


def _run(fn):
    """Operator mistakes become one clear line on stderr and exit status 2, not a traceback."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args) or 0
        except (pv.ProvisionError, OSError, KeyError, ValueError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"footfall provision: error: {message}", file=sys.stderr)
            return 2

    return wrapper


@_run
def _init_site(args: argparse.Namespace) -> int:
    site_dir = _site_dir(args)
    passphrase = _new_ca_passphrase(args)
    hash_key = Path(args.hash_key_file).read_text() if args.hash_key_file else None
    identity = args.mtls if args.identity_as_username is None else args.identity_as_username
    state = pv.init_site(
        site_dir,
        args.site,
        args.host,
        broker=pv.BrokerConfig(
            install_dir=args.broker_dir,
            port=args.port,
            bind=args.bind,
            require_certificate=args.mtls,
            use_identity_as_username=identity,
            persistence_location=args.persistence_location,
        ),
        bridge=_bridge(args),
        key_type=args.key_type,
        agent_dir=args.agent_dir,
        passphrase=passphrase,
        hash_key_hex=hash_key,
        ca_days=args.ca_days,
        cert_days=args.cert_days,
    )
    print(f"site {state.site} created in {site_dir}")
    print(f"  broker files: {site_dir / 'broker'}  (install to {args.broker_dir} on the hub)")
    print(
        f"  hub client:   {site_dir / 'hub'}  (install to {args.agent_dir} on the hub; "
        f"{pv.HUB_USER} for ingest, {pv.SYNC_USER} for `footfall sync`)"
    )
    print(f"  broker certificate for: {', '.join(state.server['hosts'])}")
    # The dashboard serves HTTPS by default: its certificate comes with the site.
    crt, _key = dashboard_cert.issue(site_dir, passphrase=passphrase)
    print(f"  dashboard HTTPS certificate: {crt}  (install to {args.agent_dir} on the hub)")
    print(f"  {_tls_summary(state.broker)}")
    print(f"  CA key: {'encrypted with the passphrase' if passphrase else 'NOT encrypted (--no-ca-passphrase)'}")
    print("next: footfall provision add-sensor --dir ... <sensor-id>")
    return 0


def _settings(args: argparse.Namespace) -> pv.AgentSettings:
    return pv.platform_settings(
        args.platform,
        capture_source=args.source,
        channels=args.channels,
        dwell_s=args.dwell,
        inside_rssi=args.inside_rssi,
        min_inside_s=args.min_inside,
        gap_s=args.gap,
        buffer_path=args.buffer_path,
        buffer_max_bytes=args.buffer_max_bytes,
    )


@_run
def _add_sensor(args: argparse.Namespace) -> int:
    site_dir = _site_dir(args)
    bundle = pv.add_sensor(
        site_dir, args.sensor, settings=_settings(args), passphrase=_passphrase(args), days=args.days
    )
    print(f"sensor {args.sensor}: bundle in {bundle} (install to the device's /etc/footfall, mode 0600)")
    if args.platform == "openwrt":
        print(OPENWRT_HINT)
    print(RELOAD_HINT.format(broker=site_dir / "broker"))
    return 0


@_run
def _rotate(args: argparse.Namespace) -> int:
    site_dir = _site_dir(args)
    bundle = pv.rotate(site_dir, args.sensor, passphrase=_passphrase(args), days=args.days)
    print(f"{args.sensor}: new credentials in {bundle}; the old password and certificate stop working on reload")
    if args.sensor == pv.SYNC_USER:
        print(f"install {bundle}/{pv.SYNC_USER}.crt, .key and sync-mqtt.pass to the hub's /etc/footfall/")
    print(RELOAD_HINT.format(broker=site_dir / "broker"))
    return 0


@_run
def _revoke(args: argparse.Namespace) -> int:
    site_dir = _site_dir(args)
    pv.revoke(site_dir, args.sensor, passphrase=_passphrase(args), reason=args.reason)
    print(f"{args.sensor}: revoked (out of passwd and ACL, certificate in the CRL, bundle deleted)")
    print(RELOAD_HINT.format(broker=site_dir / "broker"))
    return 0


@_run
def _hub(args: argparse.Namespace) -> int:
    site_dir = _site_dir(args)
    had_sync = bool(pv.load(site_dir).sync)
    state = pv.configure_hub(
        site_dir,
        hosts=args.host,
        port=args.port,
        require_certificate=args.mtls,
        use_identity_as_username=args.identity_as_username,
        persistence_location=args.persistence_location,
        bridge=_bridge(args),
        no_bridge=args.no_bridge,
        rotate_server=args.rotate_server,
        passphrase=_passphrase(args),
        days=args.days,
    )
    b = state.broker
    print(f"broker: port {b['port']}, {_tls_summary(b)}, bridge {state.bridge['address'] if state.bridge else 'none'}")
    if not had_sync:
        hub = site_dir / "hub"
        print(
            f"issued {pv.SYNC_USER}, the sync's own MQTT identity: install {hub}/{pv.SYNC_USER}.crt, .key and "
            f"sync-mqtt.pass to the hub's /etc/footfall/ and add the [sync_mqtt] table of {hub}/hub.toml to "
            "/etc/footfall/hub.toml (docs/operator-guide.md, 'Upgrading a site: the sync's MQTT identity')"
        )
    print(RELOAD_HINT.format(broker=site_dir / "broker"))
    return 0


def _tls_summary(broker: dict) -> str:
    if not broker.get("require_certificate"):
        return "mutual TLS off (a password alone logs in)"
    if broker.get("use_identity_as_username"):
        return "mutual TLS on (the certificate's CN is the MQTT username)"
    return "mutual TLS on, certificate not tied to the username (--identity-as-username ties it)"


@_run
def _crl(args: argparse.Namespace) -> int:
    site_dir = _site_dir(args)
    state = pv.refresh_crl(
        site_dir, passphrase=_passphrase(args), days=args.days, if_expiring_within=args.if_expiring_within
    )
    if state is None:
        left = pv.crl_days_left(pv.load(site_dir))
        print(f"CRL still valid for {int(left)} days (at least {args.if_expiring_within:g}): nothing to do")
        return 0
    print(f"CRL re-signed: {state.crl['entries']} entries, valid until {state.crl['next_update']}")
    print(RELOAD_HINT.format(broker=site_dir / "broker"))
    return 0


@_run
def _rotate_hash_key(args: argparse.Namespace) -> int:
    site_dir = _site_dir(args)
    hash_key = Path(args.hash_key_file).read_text() if args.hash_key_file else None
    bundles = pv.rotate_hash_key(site_dir, passphrase=_passphrase(args), hash_key_hex=hash_key, days=args.days)
    print(f"new device-id key in {site_dir / 'ca' / 'hash.key'}; {len(bundles)} sensor bundle(s) re-issued:")
    for bundle in bundles:
        print(f"  {bundle}")
    print(
        "every device gets a new id once its sensor runs the new bundle: returning-visitor figures restart, and "
        "opt-outs recorded before now no longer match (docs/operator-guide.md, 'Device-id key')"
    )
    print("install every bundle and deploy broker/ together: the old certificates and passwords stop working")
    print(RELOAD_HINT.format(broker=site_dir / "broker"))
    return 0


def _days_left(iso: str) -> int:
    return (dt.datetime.fromisoformat(iso) - dt.datetime.now(dt.UTC)).days


@_run
def _list(args: argparse.Namespace) -> int:
    state = pv.load(_site_dir(args))
    rows = [("CA", "active", state.ca), ("broker", "active", state.server), (pv.HUB_USER, "active", state.hub["cert"])]
    if state.sync:
        rows.append((pv.SYNC_USER, "active", state.sync["cert"]))
    rows += [(s, rec["status"], rec["cert"]) for s, rec in sorted(state.sensors.items())]
    print(f"site {state.site}  hosts {', '.join(state.hosts)}  port {state.broker['port']}")
    print(f"broker: {_tls_summary(state.broker)}")
    if not state.sync:
        print(f"{pv.SYNC_USER}: not issued (a site made before it existed): `footfall provision hub` issues it")
    if state.hash_key:
        print(f"device-id key: {state.hash_key.get('source', '?')}, since {state.hash_key.get('since', '?')}")
    print(f"{'name':<20} {'status':<8} {'serial':<12} {'expires':<26} days left")
    warn = 0
    for name, status, cert in rows:
        left = _days_left(cert["not_after"])
        flag = "  <- renew (rotate)" if status == "active" and left < 30 else ""
        warn += bool(flag)
        print(f"{name:<20} {status:<8} {cert['serial'][:10]:<12} {cert['not_after']:<26} {left}{flag}")
    if state.crl.get("next_update"):
        left = _days_left(state.crl["next_update"])
        flag = "  <- run `footfall provision crl`" if left < 30 else ""
        warn += bool(flag)
        print(f"CRL: {state.crl['entries']} revoked, next update {state.crl['next_update']} ({left} days){flag}")
    return 1 if warn else 0
