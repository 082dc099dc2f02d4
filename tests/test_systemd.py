"""The systemd units and device scripts: hardened as promised, and accepted by systemd's own checker.

``systemd-analyze verify`` insists that ExecStart binaries exist, so the units are checked as
temporary copies whose ``/opt/footfall/.venv/bin/footfall`` points at a stub executable.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
FIRMWARE = REPO / "firmware_configs"
INSTALLED_FOOTFALL = "/opt/footfall/.venv/bin/footfall"
SERVICES = [
    "footfall-agent.service",
    "footfall-hub.service",
    "footfall-dashboard.service",
    "footfall-central.service",
    "footfall-sync.service",
    "footfall-o2o.service",
]
SCRIPTS = sorted([*FIRMWARE.glob("*/*.sh"), *FIRMWARE.glob("*/*.init")])


def directives(path: Path) -> dict[str, list[str]]:
    """``Section.Key -> [values]`` (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(d: dict[str, list[str]], key: str) -> str:
    values = d.get(f"Service.{key}", [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_hardened(name: str) -> None:
    d = directives(UNITS / name)
    assert one(d, "ExecStart").startswith(f"{INSTALLED_FOOTFALL} ")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "UMask": "0077",
    }.items():
        assert one(d, key) == value, key
    assert d.get("Service.StateDirectory"), "state must live in a StateDirectory"
    assert d.get("Service.ReadWritePaths"), "ProtectSystem=strict needs the writable paths listed"
    assert d.get("Service.User") == ["footfall"] or d.get("Service.DynamicUser") == ["yes"]
    assert "AF_INET" in one(d, "RestrictAddressFamilies")
    if one(d, "Type") != "oneshot":  # the sync pass is re-run by its timer instead
        assert one(d, "Restart") == "on-failure" and int(one(d, "RestartSec")) > 0


def test_only_the_agent_holds_capabilities() -> None:
    agent = directives(UNITS / "footfall-agent.service")
    assert one(agent, "User") == "footfall"
    assert set(one(agent, "AmbientCapabilities").split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(one(agent, "CapabilityBoundingSet").split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert "AF_PACKET" in one(agent, "RestrictAddressFamilies").split()
    assert one(agent, "ExecStart").endswith("agent run --config /etc/footfall/agent.toml")
    for name in SERVICES[1:]:
        d = directives(UNITS / name)
        assert one(d, "CapabilityBoundingSet") == "", name
        assert "AF_PACKET" not in one(d, "RestrictAddressFamilies"), name


def test_sync_timer_triggers_the_sync_service() -> None:
    d = directives(UNITS / "footfall-sync.timer")
    assert d["Timer.OnUnitInactiveSec"] and d["Install.WantedBy"] == ["timers.target"]
    assert one(directives(UNITS / "footfall-sync.service"), "Type") == "oneshot"


def test_o2o_timer_triggers_the_o2o_service_with_the_key_as_a_credential() -> None:
    d = directives(UNITS / "footfall-o2o.timer")
    assert d["Timer.OnUnitInactiveSec"] and d["Install.WantedBy"] == ["timers.target"]
    svc = directives(UNITS / "footfall-o2o.service")
    assert one(svc, "Type") == "oneshot"
    # The partner's key reaches the runner as a credential, never on its command line.
    assert one(svc, "LoadCredential").startswith("partner-key:")
    assert "key" not in one(svc, "ExecStart").lower()


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return exe


@pytest.fixture
def unit_copies(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at an executable stub that exists here."""
    analyze = _systemd_analyze()
    stub = tmp_path / "bin" / "footfall"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.iterdir():
        (out / unit.name).write_text(unit.read_text().replace(INSTALLED_FOOTFALL, str(stub)))
    # A container without a working systemd cannot verify anything: tell that from a bad unit.
    probe = out / "probe-known-good.service"
    probe.write_text(f"[Service]\nExecStart={stub}\n")
    r = subprocess.run([analyze, "verify", str(probe)], capture_output=True, text=True, timeout=60)
    probe.unlink()
    if r.returncode != 0:
        pytest.skip(f"systemd-analyze verify does not run here: {r.stderr.strip()[:200]}")
    return out


@pytest.mark.parametrize("name", [*SERVICES, "footfall-sync.timer", "footfall-o2o.timer"])
def test_systemd_analyze_verify(unit_copies: Path, name: str) -> None:
    r = subprocess.run(
        [shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(unit_copies / name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit_copies,
    )
    # verify exits 0 on an unknown key and only warns: any output at all is a failure here.
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_security_exposure_is_low(unit_copies: Path, name: str) -> None:
    """``systemd-analyze security``: 0 is a sandbox, 10 is plain root; we stay under 2.5."""
    r = subprocess.run(
        [shutil.which("systemd-analyze") or "systemd-analyze", "security", "--offline=true", str(unit_copies / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in r.stderr:
        pytest.skip("this systemd-analyze has no offline security analysis")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) < 2.5, r.stdout


def test_device_scripts_parse() -> None:
    assert SCRIPTS, "firmware_configs has no scripts"
    for script in SCRIPTS:
        shell = "sh" if script.suffix == ".init" else "bash"
        r = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{script}: {r.stderr}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_device_scripts_pass_shellcheck(script: Path) -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    # An OpenWrt init script is ash sourced by /etc/rc.common, which defines USE_PROCD & co.
    args = ["--shell=sh", "--exclude=SC2034,SC3043"] if script.suffix == ".init" else []
    r = subprocess.run([exe, *args, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


# -- the OpenWrt sensor tarball: the agent must run from it with nothing but the stdlib ----------


def test_sensor_tarball_runs_the_agent_on_a_bare_python(tmp_path: Path, captures: list[Path]) -> None:
    import json
    import os
    import sys

    import paho

    site_packages = Path(paho.__path__[0]).parent
    out = tmp_path / "footfall-sensor.tgz"
    env = {**os.environ, "PAHO_FROM": str(site_packages)}
    r = subprocess.run(
        ["bash", str(FIRMWARE / "openwrt" / "make-sensor-tarball.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    (tmp_path / "root").mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(tmp_path / "root")], check=True)
    lib = tmp_path / "root" / "lib"
    assert sorted(p.name for p in lib.iterdir()) == ["footfall", "paho"]
    key = tmp_path / "hash.key"
    key.write_text("5f" * 32 + "\n")
    # -S: no site-packages, so only the tarball and the standard library are importable.
    program = (
        f"import sys; sys.path.insert(0, {str(lib)!r}); from footfall.cli import main; "
        f"sys.exit(main(['agent', 'replay', {str(captures[0])!r}, '--site', 'store-042', '--sensor', 's1', "
        f"'--stdout', '--hash-key-file', {str(key)!r}]))"
    )
    r = subprocess.run([sys.executable, "-S", "-c", program], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    kinds = {json.loads(line)["kind"] for line in r.stdout.splitlines() if line.startswith("{")}
    assert {"health", "presence"} <= kinds, r.stdout[:500]


def test_setup_monitor_refuses_clearly_without_the_adapter() -> None:
    script = FIRMWARE / "raspberrypi" / "setup-monitor.sh"
    r = subprocess.run(["bash", str(script), "wlan-missing", "mon-test", "six"], capture_output=True, text=True)
    assert r.returncode == 1 and "setup-monitor:" in r.stderr, r.stderr


PROCD_STUBS = r"""
# Just enough of /etc/rc.common, /lib/functions.sh and procd.sh to run start_service().
config_load() { :; }
config_get() { eval "_v=\${T_$3:-\$4}"; eval "$1=\$_v"; }
config_get_bool() { config_get "$@"; }
logger() { echo "logger $*"; }
procd_open_instance() { echo "open_instance"; }
procd_set_param() { echo "param $*"; }
procd_add_jail() { echo "jail $*"; }
procd_close_instance() { echo "close_instance"; }
procd_add_reload_trigger() { echo "reload_trigger $*"; }
# /lib/functions.sh's user helpers; chown and iw only say what they would do: this machine has no
# user footfall to give files to, and no radio.
user_exists() { grep -qs "^$1:" "${T_passwd:-/etc/passwd}"; }
group_add_next() { echo 32768; }
user_add() { echo "user_add $*"; }
chown() { echo "chown $*"; }
iw() { echo "iw $*"; }
. "$1"
# A router with procd-ujail and the capabilities file (any readable file stands in), unless a test
# says otherwise.
UJAIL=${T_ujail:-/bin/true}
CAPABILITIES=${T_capabilities:-$1}
start_service
echo "status $?"
service_triggers
"""


def test_openwrt_init_script_starts_the_agent_under_procd(tmp_path: Path) -> None:
    """Run the init script's start_service() in a POSIX sh with procd's helpers stubbed."""
    import os

    conf = tmp_path / "agent.toml"
    conf.write_text('site = "x"\n')
    env = {**os.environ, "T_config": str(conf), "T_statedir": str(tmp_path / "state"), "T_iface": "mon-absent"}
    harness = tmp_path / "harness.sh"
    harness.write_text(PROCD_STUBS)
    init = FIRMWARE / "openwrt" / "footfall-agent.init"
    r = subprocess.run(["sh", str(harness), str(init)], capture_output=True, text=True, env=env, timeout=30)
    out = r.stdout.splitlines()
    assert f"param command /usr/bin/python3 -m footfall agent run --config {conf}" in out, r.stdout
    assert "param respawn 3600 5 0" in out and "status 0" in out, r.stdout
    assert "param env PYTHONPATH=/opt/footfall/lib PYTHONDONTWRITEBYTECODE=1" in out
    assert "reload_trigger footfall" in out
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    # Missing agent.toml: no instance, a log line saying what to do.
    env["T_config"] = str(tmp_path / "missing.toml")
    r = subprocess.run(["sh", str(harness), str(init)], capture_output=True, text=True, env=env, timeout=30)
    assert "open_instance" not in r.stdout and "status 1" in r.stdout and "footfall provision" in r.stdout
    # Disabled in UCI: nothing started, and that is not an error.
    env.update(T_config=str(conf), T_enabled="0")
    r = subprocess.run(["sh", str(harness), str(init)], capture_output=True, text=True, env=env, timeout=30)
    assert "open_instance" not in r.stdout and "status 0" in r.stdout
