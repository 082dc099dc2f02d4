"""The OpenWrt sensor as shipped: tarball + only the opkg packages of packages.txt, against a real hub.

A router's Python is split into opkg packages; a module whose package is missing fails at import.
firmware_configs/openwrt/opkg_python.py reproduces that on this machine: ``python3 -S`` (no
site-packages) and an import hook that refuses every standard-library module of a package not
in packages.txt, using python3-packages.json (openwrt/packages' own file lists). The agent then
runs from the unpacked footfall-sensor.tgz exactly as procd starts it (``-m footfall agent run
--config``), with the bundle ``footfall provision add-sensor --platform openwrt`` writes,
connecting by name ("localhost": the idna codec of issue 13) over TLS to a real Mosquitto set up
by the provisioning code, replaying a real probe capture as its source.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from footfall.edge_agent import preflight
from footfall.tools import provision as pv
from footfall.tools.provision.bundle import toml_text
from tests.conftest import free_port
from tests.test_provision import SITE, HubBroker, _install_root, hub_listening, needs_broker

REPO = Path(__file__).resolve().parent.parent
OPENWRT = REPO / "firmware_configs" / "openwrt"
PACKAGES_TXT = OPENWRT / "packages.txt"
OPKG_PY = OPENWRT / "opkg_python.py"
# zipfile (importlib.metadata) and shutil import lzma if they can: python3-lzma is not needed.
OPTIONAL_IMPORTS = {"lzma"}
MAC = re.compile(r"(?i)\b[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}\b")


def _opkg_python():
    spec = importlib.util.spec_from_file_location("opkg_python", OPKG_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


opkg = _opkg_python()


@pytest.fixture(scope="module")
def tarball_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """footfall-sensor.tgz built by make-sensor-tarball.sh (paho from this venv: no network) and unpacked."""
    import paho

    work = tmp_path_factory.mktemp("tarball")
    out = work / "footfall-sensor.tgz"
    env = {**os.environ, "PAHO_FROM": str(Path(paho.__path__[0]).parent)}
    r = subprocess.run(
        ["bash", str(OPENWRT / "make-sensor-tarball.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    subprocess.run(["tar", "-xzf", str(out), "-C", str(work)], check=True)
    return work / "lib"


def run_on_router(
    lib: Path, args: list[str], packages: Path, report: Path, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python3 -m footfall ARGS`` as on a router with exactly these opkg packages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cmd = [sys.executable, "-S", str(OPKG_PY), "run", "--packages", str(packages), "--path", str(lib)]
    cmd += ["--report", str(report), "-m", "footfall", "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def without(package: str, tmp_path: Path) -> Path:
    """packages.txt less one package: the router an operator has when they skip it."""
    lines = [ln for ln in PACKAGES_TXT.read_text().splitlines() if ln.split("#")[0].split()[:1] != [package]]
    out = tmp_path / f"packages-without-{package}.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


# -- the package map itself ---------------------------------------------------------------------------


def test_package_map_places_the_modules_the_agent_needs() -> None:
    owners = opkg.Owners(opkg.load_mapping())
    assert owners("encodings.idna") == "python3-base"  # the codec's module is there...
    assert owners("unicodedata") == "python3-codecs"  # ...but what it imports is not
    assert owners("stringprep") == "python3-light"
    assert owners("ssl") == "python3-light" and owners("_ssl") == "python3-openssl"
    assert owners("sqlite3.dbapi2") == "python3-sqlite3" and owners("_sqlite3") == "python3-sqlite3"
    assert owners("ctypes._endian") == "python3-ctypes" and owners("uuid") == "python3-uuid"
    assert owners("urllib.parse") == "python3-urllib" and owners("email.parser") == "python3-email"
    assert owners("logging.handlers") == "python3-logging" and owners("json") == "python3-light"
    assert owners("_sysconfigdata__linux_x86_64-linux-gnu") == "python3-base"
    assert owners("tkinter") == owners("ctypes.test") == owners("_testcapi") == opkg.NOT_INSTALLED
    assert owners("webbrowser") == "python3-webbrowser" and owners("paho.mqtt") is None
    installed = opkg.closure(opkg.read_packages(PACKAGES_TXT), opkg.load_mapping())
    # python3-urllib pulls python3-email; everything pulls python3-light and python3-base
    assert {"python3-base", "python3-light", "python3-email", "libpython3"} <= installed


def test_preflight_table_agrees_with_the_package_map() -> None:
    """edge_agent/preflight.py carries its own small table (the map is not on the router)."""
    owners = opkg.Owners(opkg.load_mapping())
    for module, package in preflight.MODULE_PACKAGES.items():
        if package != preflight.PAHO:
            assert owners(module) == package, module
    listed = set(opkg.read_packages(PACKAGES_TXT))
    for req in preflight.REQUIREMENTS:
        if req.package != preflight.PAHO:
            assert req.package in listed, f"preflight wants {req.package}, packages.txt lacks it"


# -- the agent from the tarball, on the listed packages only, to a real TLS broker ----------------------


@pytest.fixture
def openwrt_site(tmp_path: Path) -> Iterator[tuple[Path, Path, HubBroker]]:
    """A site whose broker is named "localhost", sensor s1 provisioned with the OpenWrt preset."""
    root = _install_root()
    port = free_port()
    site_dir = tmp_path / "site"
    bundle = site_dir / "sensors" / "s1"
    cfg = pv.BrokerConfig(
        install_dir=str(root / "etc"),
        port=port,
        bind="127.0.0.1",
        persistence_location=f"{root}/data/",
        log_dest=["stderr"],
    )
    # agent_dir: the bundle's own directory stands in for the router's /etc/footfall
    pv.init_site(site_dir, SITE, ["localhost"], broker=cfg, agent_dir=str(bundle))
    pv.add_sensor(site_dir, "s1", settings=pv.platform_settings("openwrt"))
    broker = HubBroker(site_dir, root / "etc", port)
    yield site_dir, bundle, broker
    broker.stop()
    shutil.rmtree(root, ignore_errors=True)


def _router_config(bundle: Path, pcap: Path, tmp_path: Path) -> Path:
    """The bundle's agent.toml as provisioned, but capturing from a real pcap into a temp buffer."""
    conf = tomllib.loads((bundle / "agent.toml").read_text())
    # What the OpenWrt preset promises, before we swap the capture and the buffer's place.
    assert conf["capture"]["channels"] == [] and conf["capture"]["source"] == "iface:mon0"
    assert conf["buffer"]["path"] == "/var/lib/footfall/buffer.db" and conf["buffer"]["max_bytes"] == 5_000_000
    assert conf["buffer"]["hub_config"] == f"{bundle}/hub-config.json"  # on flash: survives a reboot
    assert conf["mqtt"]["host"] == "localhost" and conf["mqtt"]["ca_certs"] == f"{bundle}/ca.pem"
    conf["capture"]["source"] = f"pcap:{pcap}"
    conf["buffer"]["path"] = str(tmp_path / "buffer.db")
    conf["buffer"]["hub_config"] = str(tmp_path / "hub-config.json")
    out = tmp_path / "agent.toml"
    out.write_text(toml_text(conf))
    return out


def _smallest(captures: list[Path]) -> Path:
    return min(captures, key=lambda p: p.stat().st_size)


@needs_broker
def test_agent_from_tarball_delivers_visits_with_only_the_listed_packages(
    tarball_lib: Path, openwrt_site: tuple[Path, Path, HubBroker], captures: list[Path], tmp_path: Path
) -> None:
    site_dir, bundle, broker = openwrt_site
    broker.start()
    hub = hub_listening(site_dir, broker.port)
    packages = Path(os.environ.get("FOOTFALL_OPENWRT_PACKAGES", PACKAGES_TXT))
    config = _router_config(bundle, _smallest(captures), tmp_path)
    report = tmp_path / "modules.json"
    r = run_on_router(tarball_lib, ["agent", "run", "--config", str(config)], packages, report, tmp_path)
    got: list[tuple[str, str]] = []
    while True:
        try:
            got.append(hub.messages.get(timeout=3))
        except queue.Empty:
            break
    hub.close()
    visits = [json.loads(p) for t, p in got if t == f"footfall/{SITE}/s1/visit"]
    assert r.returncode == 0 and visits, f"rc={r.returncode}, {len(got)} messages\n{r.stderr[-3000:]}"
    assert {"health", "presence", "visit"} <= {t.rsplit("/", 1)[1] for t, _ in got}
    assert all(re.fullmatch(r"[0-9a-f]{32}", v["device"]) for v in visits)
    assert not any(MAC.search(p) for _, p in got), "a raw MAC went over the wire"
    # The paths issue 13 is about really ran, through the listed packages only.
    modules = json.loads(report.read_text())
    used = modules["used"]
    # Only imports the standard library itself wraps in try/except ImportError may be refused.
    assert set(modules["refused"]) <= OPTIONAL_IMPORTS, modules["refused"]
    assert "unicodedata" in used["python3-codecs"]  # the idna codec, for "localhost"
    assert "_ssl" in used["python3-openssl"] and "_sqlite3" in used["python3-sqlite3"]
    assert "_ctypes" in used["python3-ctypes"]
    installed = opkg.closure(opkg.read_packages(packages), opkg.load_mapping())
    assert set(used) <= installed
    # Every python3-* package in packages.txt is used: none is dead weight on a small flash.
    assert {p for p in opkg.read_packages(packages) if p.startswith("python3-")} <= set(used)


@needs_broker
def test_without_python3_codecs_the_agent_stops_at_once_and_says_what_to_install(
    tarball_lib: Path, openwrt_site: tuple[Path, Path, HubBroker], captures: list[Path], tmp_path: Path
) -> None:
    """The issue-13 router: packages.txt before the fix. Before preflight it ran on, delivering nothing."""
    site_dir, bundle, broker = openwrt_site
    broker.start()
    config = _router_config(bundle, _smallest(captures), tmp_path)
    packages = without("python3-codecs", tmp_path)
    r = run_on_router(tarball_lib, ["agent", "run", "--config", str(config)], packages, tmp_path / "m.json", tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("footfall-agent: missing Python module 'encodings.idna' (OpenWrt package python3-codecs")
    assert lines[0].endswith("install it: opkg install python3-codecs")
    assert not (tmp_path / "buffer.db").exists()  # stopped before anything started


@needs_broker
def test_the_blocker_reproduces_issue_13_without_preflight(
    tarball_lib: Path, openwrt_site: tuple[Path, Path, HubBroker], tmp_path: Path
) -> None:
    """The failure itself, as paho meets it: the network thread dies on the idna codec.

    Proves the hook models a router without python3-codecs faithfully (and why preflight exists)."""
    site_dir, bundle, broker = openwrt_site
    broker.start()
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys, time, threading\n"
        "import paho.mqtt.client as mqtt\n"
        "died = []\n"
        "threading.excepthook = lambda a: died.append(repr(a.exc_value))\n"
        "c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id='probe')\n"
        # The sensor's own certificate: client certificates are required by default.
        f"c.tls_set(ca_certs={str(bundle / 'ca.pem')!r}, certfile={str(bundle / 's1.crt')!r}, "
        f"keyfile={str(bundle / 's1.key')!r})\n"
        f"c.username_pw_set('s1', open({str(bundle / 'mqtt.pass')!r}).read().strip())\n"
        f"c.connect_async('localhost', {broker.port})\n"
        "c.loop_start()\n"
        # Until connected or the network thread died, not a fixed sleep: a TLS handshake on a
        # loaded machine can take longer than any fixed guess.
        "deadline = time.monotonic() + 20\n"
        "while not (c.is_connected() or died) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('thread died:', died, 'connected:', c.is_connected())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    for packages, expect_dead in ((without("python3-codecs", tmp_path), True), (PACKAGES_TXT, False)):
        cmd = [sys.executable, "-S", str(OPKG_PY), "run", "--packages", str(packages), "--path", str(tarball_lib)]
        cmd += ["--path", str(tmp_path), "-m", "probe"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert r.returncode == 0, r.stderr
        if expect_dead:
            assert "unknown encoding: idna" in r.stdout and "connected: False" in r.stdout, r.stdout
        else:
            assert "thread died: []" in r.stdout and "connected: True" in r.stdout, r.stdout


# -- preflight, in process ------------------------------------------------------------------------------


def test_preflight_passes_here_and_names_the_package_of_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert preflight.missing() == []
    preflight.require()  # no exit

    real = __import__

    def blocked(name: str, *args, **kwargs):
        if name in ("unicodedata", "_sqlite3"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    # The modules stay cached in sys.modules; import them afresh with two extensions "missing".
    for name in ("encodings.idna", "stringprep", "unicodedata", "sqlite3", "sqlite3.dbapi2", "_sqlite3"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr("builtins.__import__", blocked)
    problems = preflight.missing()
    assert [(req.module, pkg) for req, pkg in problems] == [
        ("encodings.idna", "python3-codecs"),
        ("sqlite3", "python3-sqlite3"),
    ]
    with pytest.raises(SystemExit) as exc:
        preflight.require()
    line = str(exc.value.code)
    assert "\n" not in line and line.startswith("footfall-agent: missing Python modules 'encodings.idna'")
    assert line.endswith("install them: opkg install python3-codecs python3-sqlite3")


def test_preflight_message_for_a_missing_paho() -> None:
    req = next(r for r in preflight.REQUIREMENTS if r.package == preflight.PAHO)
    line = preflight.message([(req, preflight.PAHO)])
    assert "'paho.mqtt.enums' (paho-mqtt 2.x" in line and "footfall-sensor.tgz" in line and "opkg" not in line


# -- what the OpenWrt files say by default -----------------------------------------------------------


def test_openwrt_files_default_to_no_hopping_and_a_small_ram_buffer() -> None:
    template = (OPENWRT / "agent.toml.template").read_text()
    conf = tomllib.loads(re.sub(r"<[^>]+>", "x", template))
    assert conf["capture"]["channels"] == []
    assert conf["buffer"] == {
        "path": "/var/lib/footfall/buffer.db",
        "max_bytes": 5_000_000,
        "hub_config": "/etc/footfall/hub-config.json",  # opt-outs survive a reboot
    }
    uci = (OPENWRT / "footfall.uci").read_text()
    assert "option statedir '/var/lib/footfall'" in uci
    assert "python3-codecs" in opkg.read_packages(PACKAGES_TXT)


def test_init_script_warns_when_the_buffer_directory_is_not_in_ram_or_on_usb(tmp_path: Path) -> None:
    from tests.test_systemd import PROCD_STUBS

    conf = tmp_path / "agent.toml"
    conf.write_text('site = "x"\n')
    harness = tmp_path / "harness.sh"
    harness.write_text(PROCD_STUBS)
    # Not under /tmp, /var or /mnt (on a router the first two are RAM, the last USB): a relative
    # path, resolved in tmp_path by the script's mkdir, so neither $HOME nor where pytest keeps
    # tmp_path matters, and pytest removes it whatever the outcome.
    env = {**os.environ, "T_config": str(conf), "T_statedir": "flash/state", "T_iface": "mon-absent"}
    r = subprocess.run(
        ["sh", str(harness), str(OPENWRT / "footfall-agent.init")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30,
    )  # fmt: skip
    assert "status 0" in r.stdout and "may be on the internal flash" in r.stdout, r.stdout
    assert (tmp_path / "flash" / "state").stat().st_mode & 0o777 == 0o700
    assert f"param command /usr/bin/python3 -m footfall agent run --config {conf}" in r.stdout
    env["T_statedir"] = str(tmp_path / "state")  # RAM: no warning
    r = subprocess.run(
        ["sh", str(harness), str(OPENWRT / "footfall-agent.init")], capture_output=True, text=True, env=env
    )
    assert "status 0" in r.stdout and "internal flash" not in r.stdout, r.stdout
