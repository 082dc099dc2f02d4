"""Channel hopping for a monitor interface, by running `iw dev IFACE set channel N` from a thread.

The trade-off: a radio listens on one channel at a time. Parked on one channel it sees every
probe burst sent there; hopping over N channels sees each channel only ~1/N of the time, so
per-channel coverage (frames, RSSI samples per device) drops by about that factor. In exchange
it sees devices and scans that never touch the parked channel (5 GHz-only phones, partial scans,
directed probes on a remembered network's channel). Phones doing a full scan probe on every
2.4 GHz channel within ~100 ms, which is why a parked radio on 1, 6 or 11 already counts most of
them; hop when a site survey shows devices the parked channel misses, or use one radio per channel.

A failing `iw` (missing binary, an interface that is not a cfg80211 monitor, a driver that refuses
the channel) does not stop capture: the error is logged once, counted, and retried every dwell.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

Runner = Callable[..., Any]  # subprocess.run-compatible: runner(argv, **kwargs) -> CompletedProcess


class ChannelError(ValueError):
    """Bad hopper configuration (no channels, non-positive dwell)."""


class ChannelHopper:
    """Cycle `iface` over `channels`, `dwell_s` seconds each, until `stop()`.

    `stats`: `hops` (successful channel sets), `failures` (failed ones); `last_error` holds the
    latest failure text, `current` the channel the radio is known to be on (None before the
    first success or after a failure, when it is unknown).
    """

    def __init__(
        self,
        iface: str,
        channels: Sequence[int] = (1, 6, 11),
        dwell_s: float = 0.25,
        runner: Runner = subprocess.run,
        *,
        iw: str = "iw",
        timeout_s: float = 5.0,
    ) -> None:
        channels = tuple(channels)
        if not channels:
            raise ChannelError("ChannelHopper needs at least one channel")
        if any(not isinstance(c, int) or isinstance(c, bool) or c <= 0 for c in channels):
            raise ChannelError(f"channels must be positive integers, got {channels!r}")
        if not dwell_s > 0:
            raise ChannelError(f"dwell_s must be > 0, got {dwell_s!r}")
        self.iface = iface
        self.channels = channels
        self.dwell_s = dwell_s
        self.runner = runner
        self.iw = iw
        self.timeout_s = timeout_s
        self.stats: dict[str, int] = {"hops": 0, "failures": 0}
        self.current: int | None = None
        self.last_error: str | None = None
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def command(self, channel: int) -> list[str]:
        return [self.iw, "dev", self.iface, "set", "channel", str(channel)]

    def set_channel(self, channel: int) -> bool:
        """Tune once; True on success. Never raises for a failing `iw`: it is counted and logged once."""
        argv = self.command(channel)
        try:
            result = self.runner(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            return self._failed(
                f"`{self.iw}` not found: install iw (Debian: apt install iw, OpenWrt: opkg install iw) to hop channels"
            )
        except subprocess.TimeoutExpired:
            return self._failed(f"`{' '.join(argv)}` did not finish within {self.timeout_s}s")
        except OSError as exc:
            return self._failed(f"cannot run `{' '.join(argv)}`: {exc}")
        rc = getattr(result, "returncode", 0)
        if rc != 0:
            output = " ".join(
                part.strip() for part in (getattr(result, "stderr", ""), getattr(result, "stdout", "")) if part
            )
            if "nl80211 not found" in output:
                hint = "this kernel has no Wi-Fi stack (cfg80211) loaded: is the Wi-Fi driver installed?"
            else:
                hint = (
                    f"is {self.iface!r} a monitor interface of a cfg80211 driver, and is no other interface "
                    "on the same phy associated?"
                )
            return self._failed(f"`{' '.join(argv)}` failed (exit {rc}): {output or 'no output'} - {hint}")
        self.stats["hops"] += 1
        self.current = channel
        if self._failing:
            log.info("channel hopping on %s works again (after %d failures)", self.iface, self.stats["failures"])
            self._failing = False
        return True

    def _failed(self, message: str) -> bool:
        self.stats["failures"] += 1
        self.last_error = message
        self.current = None
        if not self._failing:
            # Once per failure streak: a broken iw would otherwise log four lines a second.
            log.error("channel hopping on %s: %s", self.iface, message)
            self._failing = True
        return False

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            channel = self.channels[i % len(self.channels)]
            i += 1
            # Parked on one channel that is already set: nothing to do but wait.
            if not (len(self.channels) == 1 and self.current == channel):
                self.set_channel(channel)
            if self._stop.wait(self.dwell_s):
                break

    def start(self) -> ChannelHopper:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"channel-hopper-{self.iface}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop hopping; returns once the thread has ended (an in-flight `iw` call finishes first)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.timeout_s + self.dwell_s + 1.0 if timeout is None else timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ChannelHopper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
