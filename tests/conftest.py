"""Shared fixtures: a real Mosquitto per test session, the real probe captures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from footfall.tools.broker import Broker, free_port, mosquitto_path, wait_port

__all__ = ["Broker", "free_port", "wait_port"]

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
