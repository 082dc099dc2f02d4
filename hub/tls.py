"""TLS for the store dashboard: the server context and when plain HTTP is allowed at all.

The dashboard carries logins, API keys and personal data, so it speaks HTTPS with a
certificate from the site CA (``footfall provision dashboard-cert``). Plain HTTP is accepted
only on a loopback address (a TLS reverse proxy on the same machine, a demo, a test) or when
the operator says ``--insecure-http``.

Protocol floor TLS 1.2; TLS 1.2 suites are ECDHE key exchange with AEAD ciphers only (no CBC,
no SHA-1 MAC, no static RSA key exchange); TLS 1.3 suites are all AEAD already.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

MIN_VERSION = ssl.TLSVersion.TLSv1_2
# OpenSSL cipher string for TLS <= 1.2: forward secrecy and authenticated encryption only.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TransportError(ValueError):
    """The dashboard cannot be served as asked; ``str()`` says what to do instead."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_context(certfile: str | Path, keyfile: str | Path | None = None) -> ssl.SSLContext:
    """The dashboard's server context; a missing or mismatched file is a ``TransportError``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.set_ciphers(CIPHERS)
    # The server's order decides (a client cannot steer to its weakest suite); no compression (CRIME).
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    except FileNotFoundError as exc:
        raise TransportError(f"TLS certificate or key not found: {exc.filename}") from None
    except PermissionError as exc:
        raise TransportError(f"cannot read {exc.filename} as this user (the key is mode 0600 for its owner)") from None
    except ssl.SSLError as exc:
        raise TransportError(
            f"cannot use certificate {certfile} with key {keyfile or certfile}: {exc.reason or exc} "
            "(a PEM certificate and its own unencrypted PEM key are needed)"
        ) from None
    return ctx


def check_transport(host: str, certfile: str | None, insecure_http: bool) -> str:
    """``"https"`` or ``"http"``; plain HTTP on a non-loopback address needs ``insecure_http``."""
    if certfile:
        return "https"
    if is_loopback(host) or insecure_http:
        return "http"
    raise TransportError(
        f"refusing to serve logins and personal data as plain HTTP on {host}: give --certfile/--keyfile "
        "(a certificate from the site CA: footfall provision dashboard-cert), or listen on 127.0.0.1 behind "
        "a TLS reverse proxy (docs/operator-guide.md, 'Dashboard over HTTPS'), or say --insecure-http"
    )
