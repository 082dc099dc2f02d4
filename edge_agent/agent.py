"""The agent: capture -> parse -> keyed identity -> visits -> MQTT, in one process.

The raw MAC exists only between the parser's decoder and ``Identifier.identify`` inside the
hot loop below; everything after (visits, payloads, the disk buffer, logs) sees the keyed hash.

Timers run on capture time (the frames' timestamps), so a replayed file produces exactly
the visits and presence counts that a live sensor would have produced at the time; in live
mode the loop also ticks when the source has been quiet for a second. A replay has no quiet
ticks, so across a silent stretch of the capture the loop runs the ticks a live sensor would
have run meanwhile (expiry, presence, health), one per presence interval, before the next
frame (:meth:`Agent.process`).

Opt-outs apply from the first frame: the last config the hub sent is saved next to the disk
buffer (device ids only: keyed hashes and their prefixes, never a MAC) and applied in
``Agent.__init__``, so an agent that starts while the broker is unreachable still drops the
phones opted out in an earlier run; ``footfall agent run`` also waits a few seconds for a newer
retained config before it opens capture.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from footfall import __version__, payloads, schema
from footfall.edge_agent.config import AgentConfig
from footfall.edge_agent.identity import Identifier, is_device_id
from footfall.edge_agent.parse import Parser
from footfall.edge_agent.visits import VisitSettings, VisitTracker, channel_mask, freq_to_channel

log = logging.getLogger(__name__)

Sink = Callable[[str, dict[str, Any]], None]

# At most this many catch-up ticks for one silent stretch of a replayed capture: a day's worth
# at the default one-minute presence interval. A capture with a gap of days (a sensor off over
# a weekend, two files of different weeks) would otherwise emit thousands of all-zero reports
# (every visit has expired a gap_s into the silence); past the cap the agent jumps to the next
# frame's time and the hub's fallback covers the rest of the gap.
MAX_CATCH_UP_TICKS = 1440


def cpu_temperature() -> float | None:
    """SoC temperature where the board exposes one (Raspberry Pi, most OpenWrt routers)."""
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0
    except (OSError, ValueError):
        return None


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        sink: Sink,
        *,
        backlog: Callable[[], tuple[int, int]] | None = None,
        link: Callable[[], dict[str, Any]] | None = None,
    ):
        """``link``: the publisher's ``stats()``, whose refused-publish counts go into health."""
        self.config = config
        self.sink = sink
        self.backlog = backlog or (lambda: (0, 0))
        self.link = link
        self.parser = Parser()
        self.identifier = Identifier(
            config.hash_key(),
            partner_format=config.partner_mac_format if config.partner_enabled else None,
            optout=config.optout(),
        )
        self.tracker = VisitTracker(config.site, config.sensor, self._emit_visit, config.visits)
        self.frames = 0
        self.visits_sent = 0
        self.started = time.time()
        self._next_presence = 0.0
        self._next_health = 0.0
        self._ticked = False
        self._last_health: tuple[float, int] | None = None
        self._stop = threading.Event()
        self.hub_config_file = config.hub_config_file()
        self._load_hub_config()

    # -- outputs ---------------------------------------------------------------------------
    def _emit_visit(self, payload: dict[str, Any]) -> None:
        self.visits_sent += 1
        self.sink("visit", payload)

    def tick(self, now: float) -> None:
        """Periodic work: expire visits, live presence counts, health heartbeat."""
        cfg = self.config
        self._ticked = True
        self.tracker.tick(now)
        if now >= self._next_presence:
            self._next_presence = now + cfg.presence_interval_s
            devices, inside = self.tracker.presence(now, cfg.presence_interval_s)
            self.sink(
                "presence",
                payloads.presence_payload(
                    site=cfg.site,
                    sensor=cfg.sensor,
                    ts=now,
                    window_s=cfg.presence_interval_s,
                    devices=devices,
                    inside=inside,
                ),
            )
        if now >= self._next_health:
            self._next_health = now + cfg.health_interval_s
            self.sink("health", self.health(now))

    def health(self, now: float) -> dict[str, Any]:
        cfg = self.config
        rate = 0.0
        if self._last_health is not None and now > self._last_health[0]:
            rate = (self.frames - self._last_health[1]) / (now - self._last_health[0])
        self._last_health = (now, self.frames)
        backlog, dropped = self.backlog()
        stats = self.parser.stats
        return {
            "v": schema.VERSION,
            "type": "health",
            "id": payloads.message_id("health", cfg.site, cfg.sensor, round(now * 1000)),
            "site": cfg.site,
            "sensor": cfg.sensor,
            "ts": round(now, 3),
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "frames": self.frames,
            "frames_per_s": round(rate, 1),
            "rejected": sum(v for k, v in stats.items() if k != "ok"),
            "devices_tracked": len(self.tracker.open),
            "backlog": backlog,
            "dropped": dropped,
            "cpu_temp_c": cpu_temperature(),
            "optout_dropped": self.identifier.optout_hits,
            # copies of one transmission heard again (several sniffers, retries): not rejects
            "duplicates": self.tracker.duplicates,
            **self._link_health(),
        }

    def _link_health(self) -> dict[str, int]:
        if self.link is None:
            return {}
        try:
            stats = self.link()
        except Exception:  # health must go out even if the publisher's stats fail
            log.exception("publisher stats failed")
            return {}
        # Publishes the broker refused (MQTT 5 PUBACK >= 0x80, e.g. its ACL) and rows held back.
        return {"denied": int(stats.get("denied", 0)), "held": int(stats.get("held", 0))}

    # -- config from the hub ---------------------------------------------------------------
    def apply_config(self, values: dict[str, Any], *, save: bool = True) -> list[str]:
        """Apply a (retained) config message from the hub; unknown keys are ignored.

        ``save``: keep it on disk for the next start (see the module docstring).
        """
        changed: list[str] = []
        try:
            if isinstance(values.get("visits"), dict):
                changed += [f"visits.{k}" for k in self.config.visits.update(values["visits"])]
            full, packed = values.get("optout"), values.get("optout_prefixes")
            if isinstance(full, list) or isinstance(packed, str):
                # The hub sends full ids while they fit in one message, 8-byte prefixes beyond.
                hashes = [h for h in full if isinstance(h, str)] if isinstance(full, list) else []
                prefixes = schema.unpack_optout_prefixes(packed) if isinstance(packed, str) else []
                self.identifier.set_optout(hashes + self.config.optout(), prefixes)
                changed.append("optout")
            for key in ("presence_interval_s", "health_interval_s"):
                if key in values:
                    setattr(self.config, key, float(values[key]))
                    changed.append(key)
        except (TypeError, ValueError) as exc:
            log.warning("config message rejected: %s", exc)
            return changed
        if changed:
            log.info("applied config from hub: %s", ", ".join(changed))
        if save and changed:
            self._save_hub_config(values)
        return changed

    @staticmethod
    def savable(values: dict[str, Any]) -> dict[str, Any]:
        """What of a hub config goes to the sensor's disk: an allow-list of what the agent
        applies, each value checked, so nothing else the hub sends (a raw MAC in a field the
        agent does not know, a list of addresses where ids belong) ever lands on its flash."""
        kept: dict[str, Any] = {"v": 1, "type": "config"}
        visits = values.get("visits")
        if isinstance(visits, dict):
            names = {f.name for f in dataclasses.fields(VisitSettings)}
            numbers = {
                k: v for k, v in visits.items() if k in names and isinstance(v, int | float) and not isinstance(v, bool)
            }
            if numbers:
                kept["visits"] = numbers
        if isinstance(values.get("optout"), list):
            # Only device ids: anything else would not match a device anyway.
            kept["optout"] = [h.lower() for h in values["optout"] if isinstance(h, str) and is_device_id(h.lower())]
        packed = values.get("optout_prefixes")
        if isinstance(packed, str):
            try:
                schema.unpack_optout_prefixes(packed)
                kept["optout_prefixes"] = packed
            except ValueError:
                pass
        for key in ("presence_interval_s", "health_interval_s"):
            value = values.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                kept[key] = float(value)
        return kept

    def _save_hub_config(self, values: dict[str, Any]) -> None:
        path = self.hub_config_file
        data = payloads.dumps(self.savable(values))
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            if path.exists() and path.read_bytes() == data:
                return  # the same retained config at every start: spare the flash a write
            # Written aside and renamed over: a power cut leaves the old file or the new one.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except (OSError, TypeError, ValueError) as exc:
            log.warning("could not save the hub config to %s (opt-outs apply from the broker only): %s", path, exc)

    def _load_hub_config(self) -> None:
        path = self.hub_config_file
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read the saved hub config %s: %s", path, exc)
            return
        try:
            values = schema.validate(raw, "config")
        except schema.SchemaError as exc:
            log.warning("ignoring the saved hub config %s: %s", path, exc)
            return
        self.apply_config(values, save=False)
        log.info(
            "applied the hub config saved in %s (%d opted-out devices)",
            path,
            len(self.identifier.optout) + len(self.identifier.optout_prefixes),
        )

    # -- the hot loop ----------------------------------------------------------------------
    def catch_up(self, now: float) -> int:
        """Run the ticks due before ``now`` that no frame triggered; returns how many ran.

        A live sensor ticks every second even when the air is quiet; a replayed capture ticks
        only when frames arrive. So before the tick at a frame after a silence, this runs one
        tick at each presence time that passed meanwhile (the visits expire and the presence
        counts drop to zero as they would have live), at most ``MAX_CATCH_UP_TICKS``.
        """
        step = self.config.presence_interval_s
        ran = 0
        while self._ticked and step > 0 and ran < MAX_CATCH_UP_TICKS and now - self._next_presence >= step:
            self.tick(self._next_presence)
            ran += 1
        return ran

    def process(self, frames: Iterable[tuple[float, bytes]], *, catch_up: bool = True) -> None:
        """Consume frames until the source ends or :meth:`stop` is called.

        ``catch_up``: run the ticks a silent stretch of capture time skipped (:meth:`catch_up`);
        live capture turns it off, its quiet ticks run on the wall clock already.
        """
        # One call a frame into the parser (its generated decoder for the frame's radiotap
        # prefix, which returns a tuple, not a Probe), and the identity caches asked here
        # before a call: that glue was about a tenth of the agent's time on the real mix.
        decoders, other = self.parser.sighting_decoders(getattr(frames, "linktype", 127))
        decoder = decoders.get
        identifier = self.identifier
        identify = identifier.identify
        known = identifier.known  # MAC -> identity: a hit is the identity identify() would return
        ssid_hash = identifier.ssid_hash
        ssid_hashes = identifier.ssid_hashes
        observe = self.tracker.observe
        channel_of: dict[int | None, int] = {}
        stop = self._stop
        next_tick = 0.0
        n = 0
        for ts, frame in frames:
            n += 1
            if ts >= next_tick:
                self.frames += n
                n = 0
                if catch_up:
                    self.catch_up(ts)
                self.tick(ts)
                next_tick = ts + 1.0
                if stop.is_set():
                    break
            seen = decoder(frame[:8], other)(frame, ts)
            if seen is None:
                continue
            sa, rssi, seq, freq, elements, ssid = seen
            ident = known(sa)
            if ident is None and (ident := identify(sa)) is None:
                continue
            chan = channel_of.get(freq)
            if chan is None:
                chan = channel_of[freq] = channel_mask(freq_to_channel(freq))
            if ssid:
                observe(ts, ident, rssi, seq, elements, chan, ssid_hashes(ssid) or ssid_hash(ssid))
            else:
                observe(ts, ident, rssi, seq, elements, chan, None)
        self.frames += n

    def finish(self, reason: str = "shutdown") -> None:
        """Close every open visit (end of a replayed file, or the agent stopping)."""
        self.tracker.flush(reason)

    def stop(self) -> None:
        self._stop.set()

    def _live(self, source: Any) -> Iterator[tuple[float, bytes]]:
        """Frames of a live source; while the air is quiet, the timers still run.

        Ticking from inside the loop's own thread (not a timer thread) means the visit state
        needs no lock on the hot path."""
        read = getattr(source, "read", None)
        if read is None:
            yield from source
            return
        while not self._stop.is_set():
            item = read(1.0)
            if item is None:
                if source.closed:
                    return
                self.tick(time.time())
                continue
            yield item

    def run_live(self, source: Any) -> None:
        """Live capture until :meth:`stop` or the source closes; then close open visits."""
        try:
            self.process(self._live(source), catch_up=False)
        finally:
            self.finish()
