"""Start-up check: every module the live agent needs must import, or one clear line and exit 1.

OpenWrt splits Python's standard library into opkg packages (python3-light, python3-codecs,
python3-sqlite3, ...). The agent imports several of those modules lazily: a missing one then
fails late and quietly. The worst case, seen on routers: without python3-codecs the idna codec
(it needs ``unicodedata``) is gone, paho-mqtt's network thread dies with ``LookupError: unknown
encoding: idna`` on the first connect while the process stays up, so procd never restarts it and
nothing is delivered. Importing everything here, before anything starts, turns that into an exit
status and one log line naming the package to install.

Only modules of python3-light's parts that ``footfall agent run`` does not import at start-up are
listed: a module missing from the start-up imports (``logging`` in ``footfall.cli``) already fails
with a traceback before this runs. Which stdlib file is in which opkg package is recorded in
firmware_configs/openwrt/python3-packages.json (from openwrt/packages); tests/test_openwrt.py
checks this table against it.
"""

from __future__ import annotations

import codecs
import importlib
from dataclasses import dataclass

PAHO = "paho-mqtt 2.x"


@dataclass(frozen=True)
class Requirement:
    module: str  # what to import
    package: str  # the OpenWrt package that holds it (or PAHO)
    why: str


# Order: what an operator most likely lacks first. Each is imported on the live agent's code path
# (cli.cmd_run -> publish, buffer, capture): ssl and ctypes are module-level imports of the
# publisher (edge_agent/publish.py, via connection.py) and of edge_agent/capture.py (via
# rawsocket.py and bpf.py), so they are needed even without TLS or a live interface.
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("encodings.idna", "python3-codecs", "connecting to the hub by name: the idna codec"),
    Requirement("sqlite3", "python3-sqlite3", "the store-and-forward buffer"),
    Requirement("ssl", "python3-openssl", "MQTT over TLS to the hub"),
    Requirement("ctypes", "python3-ctypes", "the AF_PACKET capture's kernel filter"),
    Requirement("uuid", "python3-uuid", "paho-mqtt"),
    Requirement("urllib.request", "python3-urllib", "paho-mqtt"),
    Requirement("email.parser", "python3-email", "urllib"),
    Requirement("paho.mqtt.enums", PAHO, "the MQTT client"),
)

# The module an ImportError names (exc.name) -> the package that holds it: the failing import is
# often one level down (encodings.idna -> stringprep -> unicodedata).
MODULE_PACKAGES: dict[str, str] = {
    "unicodedata": "python3-codecs",
    "sqlite3": "python3-sqlite3",
    "_sqlite3": "python3-sqlite3",
    "_ssl": "python3-openssl",
    "_hashlib": "python3-openssl",
    "ctypes": "python3-ctypes",
    "_ctypes": "python3-ctypes",
    "uuid": "python3-uuid",
    "_uuid": "python3-uuid",
    "urllib": "python3-urllib",
    "email": "python3-email",
    "logging": "python3-logging",
    "paho": PAHO,
}


def _package_of(missing: str | None, default: str) -> str:
    name = missing or ""
    while name:
        if name in MODULE_PACKAGES:
            return MODULE_PACKAGES[name]
        name = name.rpartition(".")[0]
    return default


def missing(requirements: tuple[Requirement, ...] = REQUIREMENTS) -> list[tuple[Requirement, str]]:
    """The requirements that do not import, each with the package that would provide it."""
    out = []
    for req in requirements:
        try:
            importlib.import_module(req.module)
            if req.module == "encodings.idna":
                # What paho and ssl actually do; the codec search swallows the ImportError.
                codecs.lookup("idna")
        except LookupError:
            out.append((req, req.package))
        except ImportError as exc:
            out.append((req, _package_of(exc.name, req.package)))
    return out


def _origin(package: str) -> str:
    return package if package == PAHO else f"OpenWrt package {package}"


def message(problems: list[tuple[Requirement, str]]) -> str:
    """One line: what is missing, which package has it, the command that installs it."""
    what = ", ".join(f"{req.module!r} ({_origin(package)}; needed for {req.why})" for req, package in problems)
    opkg = sorted({package for _, package in problems if package != PAHO})
    fixes = []
    if opkg:
        fixes.append("opkg install " + " ".join(opkg))
    if any(package == PAHO for _, package in problems):
        fixes.append("unpack footfall-sensor.tgz into /opt/footfall (elsewhere: pip install 'paho-mqtt>=2,<3')")
    noun = "module" if len(problems) == 1 else "modules"
    pronoun = "it" if len(problems) == 1 else "them"
    return f"footfall-agent: missing Python {noun} {what}; install {pronoun}: {' and '.join(fixes)}"


def require() -> None:
    """Exit with status 1 and one line on stderr if anything the live agent imports is missing."""
    problems = missing()
    if problems:
        raise SystemExit(message(problems))
