"""A site's own certificate authority: CA, broker server certificate, client certificates, CRL.

ECDSA P-256 by default (small keys, fast handshakes on a router's CPU, supported by every
OpenSSL that Mosquitto and Python link against); RSA 2048 for old clients. Ed25519 is not
offered: Mosquitto's TLS clients and many embedded OpenSSL builds do not accept it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES = ("ec", "rsa")
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
# Clock skew between a freshly provisioned sensor (no RTC, NTP not yet synced) and the hub.
BACKDATE = dt.timedelta(hours=1)
# SHA-256 signatures: what every TLS stack on a sensor accepts (SHA-1 is refused by OpenSSL 3).
SIGNATURE_HASH = hashes.SHA256()


@dataclass(frozen=True)
class Issued:
    """What the site state records about a certificate: never the key."""

    serial: int
    not_before: str
    not_after: str
    sha256: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> Issued:
        return cls(
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            sha256=cert.fingerprint(hashes.SHA256()).hex(),
        )

    def as_dict(self) -> dict:
        # Serials are 159-bit: JSON numbers lose precision in many readers, so hex strings.
        return {
            "serial": f"{self.serial:x}",
            "not_before": self.not_before,
            "not_after": self.not_after,
            "sha256": self.sha256,
        }


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key(kind: str = "ec") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {kind!r}; expected one of {KEY_TYPES}")


def key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    # Traditional OpenSSL PEM ("BEGIN EC PRIVATE KEY") when unencrypted: the widest reader support.
    fmt = serialization.PrivateFormat.PKCS8 if passphrase else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def load_key(pem: bytes, passphrase: bytes | None = None) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase or None)
    except TypeError as exc:  # encrypted without passphrase, or the reverse
        raise ValueError(f"CA key passphrase problem: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"cannot read private key (wrong passphrase?): {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _name(common_name: str, site: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Footfall"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(site: str, key: PrivateKey, days: int = 3650) -> x509.Certificate:
    start = now() - BACKDATE
    name = _name(f"Footfall site CA {site}", site)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        # pathlen 0: this CA signs leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, SIGNATURE_HASH)
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    key: PrivateKey,
    common_name: str,
    site: str,
    days: int,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    start = now() - BACKDATE
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, site))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )


def san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def issue_server(
    ca_cert: x509.Certificate, ca_key: PrivateKey, key: PrivateKey, site: str, hosts: list[str], days: int = 825
) -> x509.Certificate:
    """The broker's certificate; clients check ``hosts`` (DNS names and IPs) against the SAN."""
    if not hosts:
        raise ValueError("the broker certificate needs at least one host name or IP address")
    builder = _leaf(ca_cert, ca_key, key, hosts[0], site, days, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = builder.add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
    return builder.sign(ca_key, SIGNATURE_HASH)


def issue_client(
    ca_cert: x509.Certificate, ca_key: PrivateKey, key: PrivateKey, site: str, common_name: str, days: int = 825
) -> x509.Certificate:
    """A sensor's (or the hub's) certificate; CN = MQTT username for ``use_identity_as_username``."""
    builder = _leaf(ca_cert, ca_key, key, common_name, site, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    return builder.sign(ca_key, SIGNATURE_HASH)


def make_crl(
    ca_cert: x509.Certificate, ca_key: PrivateKey, revoked: list[tuple[int, dt.datetime]], days: int = 365
) -> x509.CertificateRevocationList:
    """A CRL over every revoked serial.

    OpenSSL rejects *every* client once ``next_update`` has passed, so it is generous and the
    operator guide says to refresh it (``footfall provision crl``) well before it lapses.
    """
    start = now() - BACKDATE
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(start)
        .next_update(start + dt.timedelta(days=days))
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, SIGNATURE_HASH)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""
