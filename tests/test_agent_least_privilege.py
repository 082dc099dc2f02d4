"""The sensor agent runs as an unprivileged user with exactly CAP_NET_RAW and CAP_NET_ADMIN.

On OpenWrt, footfall-agent.init has procd start it through ujail with
footfall-agent.capabilities.json (the OCI capability sets ujail reads); under systemd,
footfall-agent.service does the same with User= and AmbientCapabilities=. Neither procd nor
ujail runs here, so:

- the init script runs under stubs of procd's shell API (the PROCD_STUBS of test_systemd.py)
  and must ask procd for the jail, the capabilities file, the user and no_new_privs, and do
  the root-only setup (user, monitor interface, directory ownership) before;
- the capabilities file is turned into the same kernel state ujail would set (all five sets
  equal to the file's, uid not 0, no_new_privs) with util-linux `setpriv`, and the agent from
  footfall-sensor.tgz, run as `nobody` that way, opens its AF_PACKET socket on a live monitor
  interface (a TUN device of link type 802.11+radiotap, tests/test_capture.py) and counts the
  real probe requests injected into it; without the capabilities it stops, naming the one it
  lacks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_capture import TunMonitor, need_root, read_pcap
from tests.test_systemd import PROCD_STUBS, UNITS, directives

REPO = Path(__file__).resolve().parent.parent
OPENWRT = REPO / "firmware_configs" / "openwrt"
INIT = OPENWRT / "footfall-agent.init"
CAPS_JSON = OPENWRT / "footfall-agent.capabilities.json"
OCI_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
WANTED = {"CAP_NET_RAW", "CAP_NET_ADMIN"}
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}  # <linux/capability.h>
NOBODY = 65534


def capabilities() -> dict[str, list[str]]:
    return json.loads(CAPS_JSON.read_text())


# -- the capabilities file and the systemd unit -----------------------------------------------------


def test_capabilities_file_grants_exactly_the_two_in_every_set() -> None:
    caps = capabilities()
    # procd's ujail ignores keys it does not know: a misspelt set would silently grant nothing.
    assert set(caps) == set(OCI_SETS)
    for name in OCI_SETS:
        assert sorted(caps[name]) == sorted(WANTED), name
    # ambient = what survives the exec into python3 (and into iw) for a non-root user
    assert set(caps["ambient"]) <= set(caps["permitted"]) & set(caps["inheritable"])


def test_systemd_agent_unit_grants_the_same_two_to_a_non_root_user() -> None:
    d = directives(UNITS / "footfall-agent.service")
    assert d["Service.User"] == ["footfall"] and d["Service.Group"] == ["footfall"]
    assert d["Service.NoNewPrivileges"] == ["yes"]
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        assert set(d[f"Service.{key}"][0].split()) == set(capabilities()["ambient"]), key


# -- the init script under procd's shell API ----------------------------------------------------------


def run_init(tmp_path: Path, **uci: str) -> tuple[list[str], str]:
    conf_dir = tmp_path / "etc" / "footfall"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "agent.toml"
    conf.write_text('site = "x"\n')
    env = {**os.environ, "T_config": str(conf), "T_statedir": str(tmp_path / "state"), "T_iface": "mon-absent"}
    env.update({f"T_{k}": v for k, v in uci.items()})
    harness = tmp_path / "harness.sh"
    harness.write_text(PROCD_STUBS)
    r = subprocess.run(["sh", str(harness), str(INIT)], capture_output=True, text=True, env=env, timeout=30)
    return r.stdout.splitlines(), str(conf_dir)


def instance(lines: list[str]) -> list[str]:
    return lines[lines.index("open_instance") + 1 : lines.index("close_instance")]


def test_init_script_starts_the_agent_as_footfall_through_ujail_with_the_capabilities(tmp_path: Path) -> None:
    out, conf_dir = run_init(tmp_path, capabilities=str(CAPS_JSON))
    assert "status 0" in out, out
    inst = instance(out)
    assert "jail footfall-agent" in inst  # no namespace options: the real filesystem and network
    assert f"param capabilities {CAPS_JSON}" in inst
    assert "\nCAPABILITIES=/etc/capabilities/footfall-agent.json\n" in INIT.read_text()  # on the router
    assert {"param user footfall", "param group footfall", "param no_new_privs 1"} <= set(inst)
    # Root's part, before procd starts anything: the user (missing here), and what it must own.
    setup = out[: out.index("open_instance")]
    assert "user_add footfall  32768 Footfall sensor agent /var/lib/footfall /bin/false" in setup
    assert f"chown footfall {tmp_path / 'state'}" in setup
    assert f"chown -R footfall {conf_dir}" in setup
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert Path(conf_dir).stat().st_mode & 0o777 == 0o700


def test_init_script_reuses_an_existing_user(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/ash\nfootfall:x:32768:32768::/var/lib/footfall:/bin/false\n")
    out, _ = run_init(tmp_path, passwd=str(passwd))
    assert "status 0" in out and not any(line.startswith("user_add") for line in out), out


def test_init_script_refuses_to_start_without_ujail_rather_than_run_as_root(tmp_path: Path) -> None:
    out, _ = run_init(tmp_path, ujail=str(tmp_path / "no-ujail"))
    assert "status 1" in out and "open_instance" not in out, out
    line = next(line for line in out if line.startswith("logger"))
    assert "opkg install procd-ujail" in line and "uci set footfall.agent.user=root" in line
    out, _ = run_init(tmp_path, capabilities=str(tmp_path / "missing.json"))
    assert "status 1" in out and "open_instance" not in out, out


def test_init_script_runs_as_root_only_when_configured_so(tmp_path: Path) -> None:
    out, _ = run_init(tmp_path, user="root", ujail=str(tmp_path / "no-ujail"))
    assert "status 0" in out, out
    assert not any(line.startswith(("jail", "chown", "user_add", "param user", "param capabilities")) for line in out)


def test_init_script_takes_over_only_a_footfall_directory(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "agent.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('site = "x"\n')
    out, _ = run_init(tmp_path / "run", config=str(conf))
    assert "status 0" in out and not any(line.startswith("chown -R") for line in out), out
    assert any("is not a footfall directory" in line for line in out)


def test_init_script_creates_the_monitor_interface_as_root_when_asked(tmp_path: Path) -> None:
    out, _ = run_init(tmp_path, phy="phy0")
    assert "iw phy phy0 interface add mon-absent type monitor" in out[: out.index("open_instance")], out


# -- the agent itself, unprivileged, capturing --------------------------------------------------------


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory `nobody` owns (pytest's tmp_path is root's and closed to others)."""
    need_root()
    if shutil.which("setpriv") is None:
        pytest.skip("util-linux setpriv is not installed")
    path = Path(tempfile.mkdtemp(prefix="ff-agent-", dir="/tmp"))
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tun() -> Iterator[TunMonitor]:
    need_root()
    try:
        monitor = TunMonitor()
    except OSError as exc:
        pytest.skip(f"cannot create a TUN device with link type 803: {exc}")
    yield monitor.up()
    monitor.remove()


def _tarball(into: Path) -> Path:
    import paho

    out = into / "footfall-sensor.tgz"
    env = {**os.environ, "PAHO_FROM": str(Path(paho.__path__[0]).parent)}
    subprocess.run(["bash", str(OPENWRT / "make-sensor-tarball.sh"), str(out)], check=True, env=env, timeout=120)
    subprocess.run(["tar", "-xzf", str(out), "-C", str(into)], check=True)
    return into / "lib"


def _setpriv(caps: dict[str, list[str]] | None) -> list[str]:
    """`setpriv` leaving exactly the file's capability sets, as ujail does for procd."""

    def spec(names: list[str]) -> str:
        return ",".join(["-all", *(f"+{n.removeprefix('CAP_').lower()}" for n in names)])

    sets = caps or {name: [] for name in OCI_SETS}
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        f"--bounding-set={spec(sets['bounding'])}",
        f"--inh-caps={spec(sets['inheritable'])}",
        f"--ambient-caps={spec(sets['ambient'])}",
        "--no-new-privs",
        "--",
    ]


def _agent_config(home: Path, iface: str) -> Path:
    key = home / "hash.key"
    key.write_text("5f" * 32 + "\n")
    key.chmod(0o600)
    os.chown(key, NOBODY, NOBODY)
    conf = home / "agent.toml"
    # No broker listens on port 9: messages stay in the buffer, where the test reads them.
    conf.write_text(
        f'site = "store-042"\nsensor = "s1"\nhash_key_file = "{key}"\n\n'
        f'[capture]\nsource = "iface:{iface}"\nchannels = []\n\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 9\nconfig_wait_s = 0\n\n'
        f'[buffer]\npath = "{home / "buffer.db"}"\n\n'
        "[report]\npresence_interval_s = 1\nhealth_interval_s = 1\n"
    )
    return conf


def _python() -> str:
    # The router runs `python3 -m footfall` with only the tarball on the path: no site-packages.
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def _packet_socket_of(uid: int, ifindex: int) -> bool:
    """An AF_PACKET socket bound to ``ifindex`` and owned by ``uid`` exists (/proc/net/packet)."""
    for line in Path("/proc/net/packet").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[4]) == ifindex and int(fields[7]) == uid:
            return True
    return False


def _caps_of(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    out = {line.split(":")[0]: int(line.split()[1], 16) for line in status if line.startswith("Cap")}
    out["Uid"] = int(next(line for line in status if line.startswith("Uid:")).split()[2])  # effective
    out["NoNewPrivs"] = int(next(line for line in status if line.startswith("NoNewPrivs:")).split()[1])
    return out


def test_agent_as_nobody_with_the_two_capabilities_captures_probe_requests(
    nobody_dir: Path, tun: TunMonitor, captures: list[Path]
) -> None:
    lib = _tarball(nobody_dir)
    conf = _agent_config(nobody_dir, tun.name)
    frames = [f for path in captures for f in read_pcap(path)][:200]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(lib), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [*_setpriv(capabilities()), _python(), "-S", "-m", "footfall", "agent", "run", "--config", str(conf)]
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=nobody_dir)
    ifindex = int(Path(f"/sys/class/net/{tun.name}/ifindex").read_text())
    try:
        deadline = time.monotonic() + 60
        while not _packet_socket_of(NOBODY, ifindex):
            assert agent.poll() is None, agent.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the agent never opened its capture socket"
            time.sleep(0.05)
        # The capture socket is the unprivileged user's, and the process holds exactly the file's sets.
        caps = _caps_of(agent.pid)
        mask = sum(1 << CAP_BITS[name] for name in WANTED)
        assert caps["Uid"] == NOBODY and caps["NoNewPrivs"] == 1
        assert {k: caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == dict.fromkeys(
            ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), mask
        )
        for frame in frames:
            tun.inject(frame)
        # The agent adds up frames once a second of capture time, at the first frame after it:
        # one more frame a second later puts the burst into the count, and the next health report.
        time.sleep(1.2)
        tun.inject(frames[0])
        time.sleep(2.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    with sqlite3.connect(nobody_dir / "buffer.db") as db:
        rows = db.execute("SELECT kind, payload FROM outbox").fetchall()
    health = [json.loads(p) for kind, p in rows if kind == "health"]
    assert health, f"no health report in the buffer; agent said:\n{err[-3000:]}"
    assert max(h["frames"] for h in health) == len(frames) + 1, err[-3000:]
    # Parsed into devices too, not only counted: the phones are being followed.
    assert max(h["devices_tracked"] for h in health) > 0, health[-1]


def test_agent_without_the_capabilities_stops_and_names_the_one_it_needs(nobody_dir: Path, tun: TunMonitor) -> None:
    lib = _tarball(nobody_dir)
    conf = _agent_config(nobody_dir, tun.name)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(lib), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [*_setpriv(None), _python(), "-S", "-m", "footfall", "agent", "run", "--config", str(conf)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=nobody_dir, timeout=120)
    assert r.returncode != 0 and "needs CAP_NET_RAW" in r.stderr, r.stderr[-3000:]
