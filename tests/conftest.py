"""Shared fixtures: a real Mosquitto per test session, the real probe captures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FOOTFALL_SHARED", REPO.parent / "shared"))
CAPTURES = SHARED / "data" / "probe-captures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Broker:
    """A Mosquitto of our own on a free port; stop()/start() keep the port (fault tests)."""

    port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            "message_size_limit 1048576\n"
        )
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the broker process
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _mosquitto_available() -> bool:
    return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker per test: tests that stop it must not disturb others."""
    if not _mosquitto_available():
        pytest.skip("mosquitto is not installed (scripts/test.sh installs it)")
    b = Broker(port=free_port(), workdir=tmp_path / "broker")
    b.workdir.mkdir()
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def captures() -> list[Path]:
    """The real labelled probe captures from ../shared; skip where a clone lacks them."""
    files = sorted(CAPTURES.glob("*.pcap")) if CAPTURES.is_dir() else []
    if not files:
        pytest.skip(f"real probe captures not found in {CAPTURES}")
    return files
