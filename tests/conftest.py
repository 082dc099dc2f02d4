"""Shared fixtures: a real Mosquitto per test session, the real probe captures."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from footfall.tools.broker import Broker, free_port, mosquitto_path, wait_port

__all__ = ["Broker", "Served", "free_port", "wait_port"]

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FOOTFALL_SHARED", REPO.parent / "shared"))
CAPTURES = SHARED / "data" / "probe-captures"


def _mosquitto_available() -> bool:
    return mosquitto_path() is not None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker per test: tests that stop it must not disturb others."""
    if not _mosquitto_available():
        pytest.skip("mosquitto is not installed (scripts/test.sh installs it)")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def captures() -> list[Path]:
    """The real labelled probe captures from ../shared; skip where a clone lacks them."""
    files = sorted(CAPTURES.glob("*.pcap")) if CAPTURES.is_dir() else []
    if not files:
        pytest.skip(f"real probe captures not found in {CAPTURES}")
    return files


class Served:
    """A FastAPI app on a real uvicorn server in a thread, on a free port (``lifespan="on"``: with
    the app's start-up and shut-down, e.g. the dashboard's summary refresher)."""

    def __init__(self, app, lifespan: str = "off") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
