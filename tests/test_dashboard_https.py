"""The store dashboard over HTTPS with a certificate from the site CA, for real.

A site is provisioned (`footfall.tools.provision`), the dashboard certificate is issued by the
command operators run, and `footfall hub serve --certfile --keyfile` runs as a subprocess
(uvicorn, the real TLS stack). Clients are httpx and raw `ssl` sockets: one trusting the site
CA logs in and gets a Secure cookie; one that does not is refused; plain HTTP to the TLS port
gets no answer; TLS 1.1 and CBC suites are refused. Plain HTTP stays available where it is
meant to be: loopback (a reverse proxy, the demo, tests) or with an explicit --insecure-http.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from footfall.hub import auth, store
from footfall.tools import provision as pv
from footfall.tools.provision import dashboard_cert
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "shop-floor-42"
LOGIN = {"username": "manager", "password": PASSWORD}


@dataclass
class Site:
    dir: Path
    ca: Path
    cert: Path
    key: Path
    db: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("https")
    site_dir = root / "site"
    pv.init_site(site_dir, "store-042", ["hub.store-042.lan", "192.168.10.2"])
    # The operator's command, not the function: what the docs say to type.
    r = subprocess.run(
        [sys.executable, "-m", "footfall.tools.provision.dashboard_cert", "--dir", str(site_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "hub.store-042.lan, 192.168.10.2, localhost, 127.0.0.1" in r.stdout
    db = root / "hub.db"
    conn = store.connect(db)
    auth.add_user(conn, "manager", PASSWORD)
    conn.close()
    return Site(
        site_dir, site_dir / "ca" / "ca.pem", site_dir / "hub" / "dashboard.crt", site_dir / "hub" / "dashboard.key", db
    )


class Served:
    """``footfall hub serve ARGS`` in a subprocess, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.url = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "footfall", "hub", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )

    def wait_listening(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"hub serve exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nothing listening on {port} after {timeout} s")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return out


@pytest.fixture(scope="module")
def https(site: Site) -> Iterator[str]:
    """Base URL of the dashboard served over TLS with the site CA's certificate."""
    port = free_port()
    served = Served(
        ["--db", str(site.db), "--port", str(port), "--certfile", str(site.cert), "--keyfile", str(site.key)]
    )
    served.wait_listening(port)
    yield f"https://127.0.0.1:{port}"
    served.stop()


def trusting(site: Site) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(site.ca))


# -- the certificate ---------------------------------------------------------------------------


def test_certificate_is_a_server_certificate_of_the_site_ca_for_the_hub_names(site: Site) -> None:
    cert = x509.load_pem_x509_certificate(site.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(site.ca.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"hub.store-042.lan", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"192.168.10.2", "127.0.0.1", "::1"}
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert site.key.stat().st_mode & 0o777 == 0o600


def test_dashboard_cert_command_takes_other_names_and_the_provision_hook(site: Site, tmp_path: Path) -> None:
    """`add_parser` is what tools/provision_cli.py registers as `footfall provision dashboard-cert`."""
    import argparse

    parser = argparse.ArgumentParser()
    dashboard_cert.add_parser(parser.add_subparsers())
    other = tmp_path / "site"
    pv.init_site(other, "store-043", ["hub.store-043.lan"])
    args = parser.parse_args(["dashboard-cert", "--dir", str(other), "--host", "dash.store-043.lan", "--days", "30"])
    assert args.func(args) == 0
    cert = x509.load_pem_x509_certificate((other / "hub" / "dashboard.crt").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["dash.store-043.lan"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31


def test_dashboard_cert_with_an_encrypted_ca_key_takes_the_passphrase_from_a_file_or_env(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    pv.init_site(site_dir, "store-044", ["hub.store-044.lan"], passphrase=b"correct horse battery")
    cmd = [sys.executable, "-m", "footfall.tools.provision.dashboard_cert", "--dir", str(site_dir)]
    env = {k: v for k, v in os.environ.items() if k != dashboard_cert.PASSPHRASE_ENV}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "is encrypted: give its passphrase" in r.stderr, r.stderr
    assert not (site_dir / "hub" / "dashboard.crt").exists()
    secret = tmp_path / "ca.pass"
    secret.write_text("correct horse battery\n")
    r = subprocess.run([*cmd, "--ca-passphrase-file", str(secret)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    env[dashboard_cert.PASSPHRASE_ENV] = "correct horse battery"
    assert subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60).returncode == 0


# -- HTTPS with the site CA ---------------------------------------------------------------------


def test_login_over_https_sets_a_secure_httponly_strict_cookie(site: Site, https: str) -> None:
    with httpx.Client(base_url=https, verify=trusting(site), timeout=10) as client:
        r = client.post("/auth/login", json=LOGIN)
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"]
        attrs = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite"} <= attrs, cookie
        assert "samesite=strict" in cookie.lower()
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        assert client.get("/auth/me").json() == {"kind": "user", "name": "manager"}
        logout = client.post("/auth/logout")
        assert "secure" in logout.headers["set-cookie"].lower()


def test_a_client_that_does_not_trust_the_site_ca_is_refused(https: str) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https + "/healthz", timeout=10)


def test_plain_http_to_the_tls_port_gets_no_answer(https: str) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.post(https.replace("https://", "http://") + "/auth/login", json=LOGIN, timeout=10)


def _handshake(https: str, ctx: ssl.SSLContext) -> tuple[str, str]:
    port = int(https.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        name, version, _bits = tls.cipher()
        return version, name


def test_tls_1_1_and_cbc_suites_are_refused_modern_ones_accepted(site: Site, https: str) -> None:
    old = trusting(site)
    # This client would speak TLS 1.1 (OpenSSL 3 needs security level 0 for it): the server won't.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point: a client still offering it
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(https, old)
    for cbc in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256"):
        weak = trusting(site)
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers(cbc)
        with pytest.raises(ssl.SSLError):
            _handshake(https, weak)
    tls12 = trusting(site)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, name = _handshake(https, tls12)
    assert version == "TLSv1.2" and name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    assert _handshake(https, trusting(site))[0] == "TLSv1.3"


def test_the_dashboard_unit_serves_https_with_the_provisioned_pair() -> None:
    from footfall.cli import build_parser
    from tests.test_systemd import INSTALLED_FOOTFALL, UNITS, directives

    exec_start = directives(UNITS / "footfall-dashboard.service")["Service.ExecStart"][0]
    args = build_parser().parse_args(exec_start.removeprefix(INSTALLED_FOOTFALL).split())
    assert (args.host, args.port) == ("0.0.0.0", 8443)
    assert (args.certfile, args.keyfile) == ("/etc/footfall/dashboard.crt", "/etc/footfall/dashboard.key")
    assert not args.insecure_http
    # The names `install ... hub/* /etc/footfall/` gives the files dashboard-cert writes.
    assert (dashboard_cert.CERT_FILE, dashboard_cert.KEY_FILE) == ("dashboard.crt", "dashboard.key")


# -- when plain HTTP is allowed ------------------------------------------------------------------


def test_plain_http_off_loopback_is_refused_unless_asked_for(site: Site) -> None:
    port = free_port()
    refused = Served(["--db", str(site.db), "--host", "0.0.0.0", "--port", str(port)])
    refused.proc.wait(timeout=60)
    out = refused.proc.stdout.read()
    assert refused.proc.returncode == 2, out
    assert "refusing to serve logins and personal data as plain HTTP on 0.0.0.0" in out
    assert "--certfile" in out and "--insecure-http" in out

    asked = Served(["--db", str(site.db), "--host", "0.0.0.0", "--port", str(port), "--insecure-http"])
    try:
        asked.wait_listening(port)
        r = httpx.post(f"http://127.0.0.1:{port}/auth/login", json=LOGIN, timeout=10)
        assert r.status_code == 200 and "secure" not in r.headers["set-cookie"].lower()
    finally:
        out = asked.stop()
    assert "logins travel in clear text" in out


def test_the_demo_stays_on_loopback_unless_told(tmp_path: Path) -> None:
    """The demo serves plain HTTP on 127.0.0.1 (the URL it prints); elsewhere only when asked, and
    it says so before spending a minute on building the store."""
    r = subprocess.run(
        [sys.executable, "-m", "footfall", "demo", "--host", "0.0.0.0", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "only with --insecure-http" in r.stderr, r.stderr
    assert not (tmp_path / "demo").exists()


def test_keyfile_that_does_not_match_is_named_at_start(site: Site, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_bytes((site.dir / "hub" / "footfall-hub.key").read_bytes())
    bad = Served(
        ["--db", str(site.db), "--port", str(free_port()), "--certfile", str(site.cert), "--keyfile", str(other)]
    )
    bad.proc.wait(timeout=60)
    out = bad.proc.stdout.read()
    assert bad.proc.returncode == 2 and f"cannot use certificate {site.cert} with key {other}" in out, out


def test_hub_toml_web_section_serves_https(site: Site, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "hub.toml"
    conf.write_text(
        f'site = "store-042"\ndb = "{site.db}"\n\n[web]\nhost = "127.0.0.1"\nport = {port}\n'
        f'certfile = "{site.cert}"\nkeyfile = "{site.key}"\n'
    )
    conn = store.connect(site.db)
    key = auth.create_api_key(conn, f"prometheus-{port}")
    conn.close()
    served = Served(["--config", str(conf)])
    try:
        served.wait_listening(port)
        with httpx.Client(verify=trusting(site), timeout=10) as client:
            r = client.post(f"https://127.0.0.1:{port}/auth/login", json=LOGIN)
            assert r.status_code == 200 and "secure" in r.headers["set-cookie"].lower()
            # The dashboard's own certificate is watched like the others: an alert before it expires.
            metrics = client.get(f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {key}"})
        assert metrics.status_code == 200, metrics.text
        expiry = x509.load_pem_x509_certificate(site.cert.read_bytes()).not_valid_after_utc.timestamp()
        line = next(x for x in metrics.text.splitlines() if 'role="dashboard"' in x)
        assert line.startswith("footfall_cert_expiry_timestamp_seconds") and float(line.split()[-1]) == expiry
    finally:
        served.stop()


@pytest.fixture
def loopback_http(site: Site) -> Iterator[tuple[str, str]]:
    """Two plain-HTTP dashboards on loopback, as behind a reverse proxy on the same machine:
    (with FOOTFALL_TRUSTED_PROXIES=127.0.0.1, without)."""
    running = []
    try:
        for env in ({"FOOTFALL_TRUSTED_PROXIES": "127.0.0.1"}, {"FOOTFALL_TRUSTED_PROXIES": ""}):
            port = free_port()
            served = Served(["--db", str(site.db), "--port", str(port)], env=env)
            running.append(served)
            served.wait_listening(port)
            served.url = f"http://127.0.0.1:{port}"
        yield running[0].url, running[1].url
    finally:
        for served in running:
            served.stop()


def test_behind_a_trusted_https_proxy_the_cookie_is_secure(loopback_http: tuple[str, str]) -> None:
    behind_proxy, untrusted = loopback_http
    plain = httpx.post(behind_proxy + "/auth/login", json=LOGIN, timeout=10)
    assert plain.status_code == 200 and "secure" not in plain.headers["set-cookie"].lower()
    assert "strict-transport-security" not in plain.headers
    # What nginx sends with `proxy_set_header X-Forwarded-Proto $scheme` for an HTTPS client.
    proxied = httpx.post(behind_proxy + "/auth/login", json=LOGIN, headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert "secure" in proxied.headers["set-cookie"].lower()
    assert proxied.headers["strict-transport-security"] == "max-age=31536000"
    # A second proxy appends; the last entry is the nearest proxy's word and decides.
    chained = httpx.post(behind_proxy + "/auth/login", json=LOGIN, headers={"X-Forwarded-Proto": "https, http"})
    assert "secure" not in chained.headers["set-cookie"].lower()
    # From a peer that is not a configured proxy the header is anybody's claim: ignored.
    spoofed = httpx.post(untrusted + "/auth/login", json=LOGIN, headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert spoofed.status_code == 200 and "secure" not in spoofed.headers["set-cookie"].lower()


# -- a real browser ------------------------------------------------------------------------------


@pytest.mark.browser
def test_chromium_logs_in_over_https_and_keeps_only_a_secure_cookie(site: Site, https: str) -> None:
    """Chromium refuses the site CA's certificate until told to trust it; then the login page
    works over HTTPS, nothing loads over plain HTTP, and the cookie it keeps is Secure and
    invisible to scripts. Trust is given by pinning the dashboard's key: the flag Chromium has
    for a CA outside its store (importing ca.pem needs NSS's certutil, not installed here)."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from tests.test_dashboard_browser import ARGS, CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    cert = x509.load_pem_x509_certificate(site.cert.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    with sync_api.sync_playwright() as p:
        stranger = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            with pytest.raises(sync_api.Error, match="ERR_CERT_AUTHORITY_INVALID"):
                stranger.new_page().goto(https + "/login")
        finally:
            stranger.close()
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=[*ARGS, f"--ignore-certificate-errors-spki-list={pin}"], headless=True
        )
        try:
            page = browser.new_page()
            elsewhere: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((https, "data:")) else elsewhere.append(r.url))
            page.goto(https + "/login")
            page.fill("#username", "manager")
            page.fill("#password", PASSWORD)
            page.click("#submit")
            page.wait_for_url(https + "/")
            cookies = page.context.cookies()
            assert [(c["name"], c["secure"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
                ("footfall_session", True, True, "Strict")
            ]
            assert page.evaluate("document.cookie") == ""
            assert page.evaluate("fetch('/auth/me').then(r => r.json())") == {"kind": "user", "name": "manager"}
            assert elsewhere == []
        finally:
            browser.close()
