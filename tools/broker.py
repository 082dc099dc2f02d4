"""A private Mosquitto on a free local port: for the demo, benchmarks and tests.

Never the system broker: a demo or a test must not read or disturb a real site's messages.
``stop()``/``start()`` keep the port and the persistence directory, so a fault test can take
the broker down and bring it back with every persistent session intact.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGTERM when the process that started it
    dies, however it dies (SIGKILL included, when no cleanup code of ours can run)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@dataclass
class Broker:
    workdir: Path
    port: int = 0
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None
    extra_conf: str = ""  # more mosquitto.conf lines, for a test that needs other broker limits
    # Tie the broker's life to this process (Linux). Opt-in: the kernel ties it to the *thread*
    # that started it, so a broker started from a short-lived thread would die with that thread.
    die_with_parent: bool = False

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self) -> Broker:
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        # As root, Mosquitto drops to the "mosquitto" user, which cannot write a private temp
        # directory: persistence would fail silently and a restart would forget every session.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            user + f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            "message_size_limit 1048576\n" + self.extra_conf
        )
        tie = self.die_with_parent and sys.platform.startswith("linux")
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-c", str(self.conf)], stdout=log, stderr=log, preexec_fn=_die_with_parent if tie else None
            )
        try:
            wait_port(self.port, host=self.host)
        except BaseException:
            # An interrupt or a broker that never listened: ``with`` would not call __exit__.
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
