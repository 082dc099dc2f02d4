"""Where a site directory keeps its files, its CA, and the error every provisioning step raises."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from footfall.tools.provision import ca


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


PASSPHRASE_HINT = "--ca-passphrase-file FILE or the environment variable FOOTFALL_CA_PASSPHRASE"


def _load_ca(site_dir: Path, passphrase: bytes | None) -> tuple[x509.Certificate, ca.PrivateKey]:
    p = _paths(site_dir)
    pem = p["ca_key"].read_bytes()
    # Said here rather than as cryptography's "Password was not given but private key is encrypted".
    if b"ENCRYPTED" in pem and not passphrase:
        raise ProvisionError(f"the CA key {p['ca_key']} is encrypted: give its passphrase ({PASSPHRASE_HINT})")
    return ca.load_cert(p["ca_pem"].read_bytes()), ca.load_key(pem, passphrase)
