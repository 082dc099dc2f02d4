"""The central service's secrets as systemd credentials (LoadCredential=), not world-readable files.

systemd/footfall-central.service runs as a DynamicUser, which can read no root-only file. The
unit hands secrets over with LoadCredential=: systemd copies each into $CREDENTIALS_DIRECTORY
for this service alone. Here $CREDENTIALS_DIRECTORY is a temporary directory of 0600 files, as
systemd makes it; the config loader, a real `footfall central serve` and libpq's own conninfo
parser read from it. The failure an operator meets without credentials (a root-only file and
an unprivileged service user) is reproduced as the `nobody` user.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from footfall.cloud_sync.central import config
from tests.conftest import free_port, wait_port

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "footfall-central.service"
CHAIN_KEY = "5f" * 32
DB_PASSWORD = "p@ss:w/rd 42%"


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$CREDENTIALS_DIRECTORY as systemd prepares it: one 0600 file per credential."""
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    for name, value in (("chain.key", CHAIN_KEY), ("db.password", DB_PASSWORD), ("cdp-main.key", "cdp-secret-1")):
        path = creds / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    monkeypatch.setenv(config.CREDENTIALS_ENV, str(creds))
    return creds


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "central.toml"
    path.write_text(text)
    return path


def test_bare_names_are_read_from_the_credentials_directory(credentials: Path, tmp_path: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    conf = _toml(
        tmp_path,
        'db = "postgresql://footfall@db.internal:5433/footfall"\ndb_password_file = "db.password"\n'
        'chain_key_file = "chain.key"\n\n[cdp.main]\nurl = "https://cdp.example/import"\n'
        'api_key_file = "cdp-main.key"\n',
    )
    cfg = config.load(conf)
    assert cfg.chain_key() == bytes.fromhex(CHAIN_KEY)
    assert cfg.cdp["main"].api_key == "cdp-secret-1"
    # libpq's own reading of the URL gets the password back exactly, special characters and all.
    parsed = psycopg.conninfo.conninfo_to_dict(cfg.db)
    assert parsed == {
        "user": "footfall",
        "password": DB_PASSWORD,
        "host": "db.internal",
        "port": "5433",
        "dbname": "footfall",
    }
    # Nothing but the config: the secrets stay in their files.
    assert DB_PASSWORD not in conf.read_text() and CHAIN_KEY not in conf.read_text()


def test_a_missing_credential_says_which_load_credential_line_is_needed(credentials: Path, tmp_path: Path) -> None:
    (credentials / "chain.key").unlink()
    cfg = config.load(_toml(tmp_path, 'chain_key_file = "chain.key"\n'))
    with pytest.raises(ValueError, match=r"no credential 'chain.key' in \$CREDENTIALS_DIRECTORY") as exc:
        cfg.chain_key()
    assert "LoadCredential=chain.key:/etc/footfall/credentials/chain.key" in str(exc.value)
    with pytest.raises(ValueError, match="db_password_file: only a postgresql:// database has a password"):
        config.load(_toml(tmp_path, 'db = "central.db"\ndb_password_file = "db.password"\n'))
    with pytest.raises(ValueError, match="has a password already"):
        config.load(_toml(tmp_path, 'db = "postgresql://u:x@h/d"\ndb_password_file = "db.password"\n'))


def test_paths_stay_paths_and_without_systemd_bare_names_are_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "keys" / "chain.key"
    key.parent.mkdir()
    key.write_text(CHAIN_KEY)
    monkeypatch.delenv(config.CREDENTIALS_ENV, raising=False)
    assert config.load(_toml(tmp_path, f'chain_key_file = "{key}"\n')).chain_key() == bytes.fromhex(CHAIN_KEY)
    monkeypatch.chdir(key.parent)
    assert config.load(_toml(tmp_path, 'chain_key_file = "chain.key"\n')).chain_key() == bytes.fromhex(CHAIN_KEY)
    # An administrator's command with the same config: point at the credentials' sources.
    monkeypatch.chdir("/")
    monkeypatch.setenv(config.CREDENTIALS_ENV, str(key.parent))
    assert config.load(_toml(tmp_path, 'chain_key_file = "chain.key"\n')).chain_key() == bytes.fromhex(CHAIN_KEY)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_root_only_secret_read_by_a_service_user_is_refused_with_the_way_out(tmp_path: Path) -> None:
    """What DynamicUser without LoadCredential met: the file is root's, 0600; the service is not root."""
    secret = tmp_path / "chain.key"
    secret.write_text(CHAIN_KEY)
    secret.chmod(0o600)
    code = (
        "from footfall.cloud_sync.central import config\n"
        "try:\n    config.load(None).chain_key()\nexcept ValueError as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != config.CREDENTIALS_ENV}
    env["FOOTFALL_CENTRAL_CHAIN_KEY_FILE"] = str(secret)
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=60,
    )
    assert f"chain_key_file: {secret} is not readable by this user" in r.stdout, r.stderr
    assert "LoadCredential=chain.key:" in r.stdout and "never make it world-readable" in r.stdout


def test_central_serve_reads_the_chain_key_from_a_credential(credentials: Path, tmp_path: Path) -> None:
    """`footfall central serve` as the unit starts it: the config names credentials, not paths."""
    port = free_port()
    conf = _toml(tmp_path, f'db = "{tmp_path / "central.db"}"\nchain_key_file = "chain.key"\nport = {port}\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "footfall", "central", "serve", "--config", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd="/",
        env={**os.environ, config.CREDENTIALS_ENV: str(credentials)},
    )
    try:
        wait_port(port, timeout=30)
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/optout", json={"mac": "AA:BB:CC:DD:EE:FF"}, timeout=10)
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert CHAIN_KEY not in out
    # Without the credential the service does not start, and says what to add to the unit.
    (credentials / "chain.key").unlink()
    r = subprocess.run(
        [sys.executable, "-m", "footfall", "central", "serve", "--config", str(conf)],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, config.CREDENTIALS_ENV: str(credentials)},
        timeout=60,
    )
    assert r.returncode != 0 and "LoadCredential=chain.key:" in r.stderr, r.stderr[-2000:]


def test_the_unit_loads_the_chain_key_as_a_credential_and_names_no_secret_path() -> None:
    from tests.test_systemd import directives

    d = directives(UNIT)
    assert d["Service.DynamicUser"] == ["yes"]
    assert d["Service.LoadCredential"] == ["chain.key:/etc/footfall/credentials/chain.key"]
    assert "/etc/footfall/credentials" not in d["Service.ExecStart"][0]
