"""The store dashboard's HTTPS certificate, issued by the site CA.

    issue(site_dir, hosts=None, passphrase=None, days=825) -> (certificate path, key path)

writes ``hub/dashboard.crt`` and ``hub/dashboard.key`` (0600) into the site directory, beside the
hub's MQTT bundle, so the usual ``install ... hub/* /etc/footfall/`` puts them where
``systemd/footfall-dashboard.service`` looks. The names default to the hub's (``init-site
--host``: the names sensors reach the hub by, which is the same machine) plus localhost;
``hosts`` replaces them. Browsers and Prometheus trust it once they trust the site's
``ca.pem``. Run it again to renew (825 days, like every site certificate) or to add a name.

Command line: ``footfall provision dashboard-cert [--host NAME ...]`` once ``add_parser`` is
registered in ``tools/provision_cli.py``; meanwhile ``python -m
footfall.tools.provision.dashboard_cert --dir SITE_DIR``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cryptography import x509

from footfall.tools.provision import ca
from footfall.tools.provision.files import ensure_dir, write_file
from footfall.tools.provision.state import load

CERT_FILE = "dashboard.crt"
KEY_FILE = "dashboard.key"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SITE_DIR_ENV = "FOOTFALL_SITE_DIR"
PASSPHRASE_ENV = "FOOTFALL_CA_PASSPHRASE"


def default_hosts(site_dir: Path) -> list[str]:
    state = load(site_dir)
    return list(dict.fromkeys([*state.hosts, *LOCAL_HOSTS]))


def issue(
    site_dir: Path,
    hosts: list[str] | None = None,
    *,
    passphrase: bytes | None = None,
    days: int = 825,
) -> tuple[Path, Path]:
    """Issue (or renew) the dashboard's server certificate; returns (certificate, key) paths."""
    state = load(site_dir)
    names = list(dict.fromkeys(hosts)) if hosts else default_hosts(site_dir)
    ca_cert = ca.load_cert((site_dir / "ca" / "ca.pem").read_bytes())
    ca_key = ca.load_key((site_dir / "ca" / "ca.key").read_bytes(), passphrase)
    key = ca.new_key(state.key_type)
    cert = ca.issue_server(ca_cert, ca_key, key, state.site, names, days)
    out = ensure_dir(site_dir / "hub")
    # The key first: a reader that finds the new certificate also finds its key.
    key_path = write_file(out / KEY_FILE, ca.key_pem(key))
    cert_path = write_file(out / CERT_FILE, ca.cert_pem(cert))
    return cert_path, key_path


def _passphrase(args: argparse.Namespace, site_dir: Path) -> bytes | None:
    """From a file or the environment, as every ``footfall provision`` command: never argv."""
    if args.ca_passphrase_file:
        value = Path(args.ca_passphrase_file).read_text().strip()
        if not value:
            raise ValueError(f"the passphrase file {args.ca_passphrase_file} is empty")
        return value.encode()
    value = os.environ.get(PASSPHRASE_ENV, "").strip()
    if value:
        return value.encode()
    if b"ENCRYPTED" in (site_dir / "ca" / "ca.key").read_bytes():
        raise ValueError(
            f"the CA key {site_dir / 'ca' / 'ca.key'} is encrypted: give its passphrase "
            f"(--ca-passphrase-file FILE or the environment variable {PASSPHRASE_ENV})"
        )
    return None


def _command(args: argparse.Namespace) -> int:
    value = args.dir or os.environ.get(SITE_DIR_ENV)
    if not value:
        print(f"error: give --dir or set {SITE_DIR_ENV}", file=sys.stderr)
        return 2
    site_dir = Path(value)
    try:
        passphrase = _passphrase(args, site_dir)
        cert_path, key_path = issue(site_dir, args.host or None, passphrase=passphrase, days=args.days)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cert = ca.load_cert(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = ", ".join(str(n.value) for n in san)
    print(f"{cert_path} and {key_path}: valid until {cert.not_valid_after_utc:%Y-%m-%d}, for {names}")
    print(
        "next: install them on the hub as /etc/footfall/dashboard.crt and /etc/footfall/dashboard.key "
        "(owner footfall, mode 0600), then `systemctl restart footfall-dashboard`; browsers trust them "
        "once the site's ca.pem is installed (docs/operator-guide.md, 'Dashboard over HTTPS')"
    )
    return 0


def add_parser(psub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``dashboard-cert`` under ``footfall provision``."""
    p = psub.add_parser("dashboard-cert", help="issue the store dashboard's HTTPS certificate from the site CA")
    p.add_argument("--dir", help=f"site directory (default ${SITE_DIR_ENV})")
    p.add_argument("--ca-passphrase-file", help=f"file holding the CA key passphrase (or set ${PASSPHRASE_ENV})")
    p.add_argument(
        "--host",
        action="append",
        help="a name or address browsers use for the dashboard (repeat; default: the hub's names and localhost)",
    )
    p.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    p.set_defaults(func=_command)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m footfall.tools.provision.dashboard_cert")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["dashboard-cert", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
