"""The MQTT connection under :class:`~footfall.edge_agent.publish.Publisher`: our own network loop
around paho, why each connect failed in the journal, and a watchdog on the loop itself.

Why not paho's ``loop_start()``: its thread reconnects by itself and swallows the reason a
connect failed (``on_connect_fail`` carries no exception), so a sensor with a wrong hub name, a
refused port or a certificate its clock says is not yet valid left the journal empty. And an
exception that is not an OSError (``LookupError: unknown encoding: idna`` on a stripped Python,
a bug in a callback) ended that thread silently: an agent that buffers to disk for ever while
systemd thinks it is fine. Here one thread of ours calls paho's public ``reconnect()`` and
``loop()``: every failure comes back to us as an exception or a CONNACK reason code, and an
unexpected exception ends the loop visibly (:attr:`NetworkLoop.dead`) so the agent can exit
non-zero and its service manager restart it.

paho writes to the socket from whichever thread calls ``publish()`` when it sees no thread of
its own ``loop_start()``; registering ``on_socket_register_write`` (its hook for external event
loops) turns that off, so all socket I/O stays on this thread, and ``publish()`` from the sender
thread only queues and wakes ``loop()`` through paho's socketpair.

Journal: one WARNING per change of cause ("MQTT connect to hub:8883 failed: certificate verify
failed: ..."), a repeat of the same cause at most every ``REPEAT_S`` with the number of attempts
since, one INFO when connected again.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from footfall import __version__

log = logging.getLogger("footfall.edge_agent.publish")

REPEAT_S = 600.0  # a cause that does not change is logged again at most this often
LOOP_TIMEOUT = 1.0  # select() timeout of one loop(): bounds how late stop() and the heartbeat are
# A loop without a heartbeat for this long is hung. A connect attempt blocks the loop: paho bounds
# TCP and TLS by its connect_timeout (5 s), but the resolver has its own (often 5 s x attempts x
# servers), so leave plenty of room before calling it dead.
STALL_S = 300.0


@dataclass(frozen=True)
class TLSOptions:
    """TLS to the broker. ``ca_certs`` None uses the system CAs.

    ``insecure`` skips the hostname check only (like ``mosquitto_pub --insecure``): the
    certificate must still chain to ``ca_certs``. For brokers addressed by IP on a shop LAN.
    """

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.ca_certs)
            if self.certfile:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"TLS setup failed (ca_certs={self.ca_certs!r}, certfile={self.certfile!r}, "
                f"keyfile={self.keyfile!r}): {exc}"
            ) from None
        if self.insecure:
            ctx.check_hostname = False
        return ctx


def package_version() -> str:
    """The agent's version, from the package itself: the sensor tarball carries no package
    metadata (importlib.metadata answered "0" there), and importlib.metadata with the zipfile
    and csv modules it imports cost a sensor 1-1.5 MB of RSS for this one string."""
    return __version__


def describe(exc: BaseException, host: str) -> str:
    """One line an installer can act on, for an exception from a connect attempt."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # verify_message: "IP address mismatch, certificate is not valid for ...",
        # "certificate is not yet valid" (clock before NTP sync), "unable to get local issuer ..."
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on that port?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class ConnectionLog:
    """Connect failures in the journal: once per change of cause, repeats rate-limited.

    A connection that keeps dropping for the same reason (flapping) is one outage to the
    operator: a repeat of the last logged cause within ``repeat_s`` stays quiet, and so does the
    reconnection that follows it.
    """

    def __init__(self, target: str, repeat_s: float = REPEAT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.repeat_s = repeat_s
        self._clock = clock
        self._cause: tuple[bool, str] | None = None  # (lost, cause) of the last logged line
        self._logged_at = 0.0
        self._since = 0  # failures since that line
        self._down_since: float | None = None
        self._attempts = 0  # failures in this outage
        self._announced = False  # the operator saw this outage in the journal
        self._ever_connected = False

    def failed(self, cause: str, *, lost: bool = False) -> None:
        now = self._clock()
        new_outage = self._down_since is None
        if new_outage:
            self._down_since, self._attempts, self._announced = now, 0, False
        self._attempts += 1
        what = f"connection to {self.target} lost" if lost else f"connect to {self.target} failed"
        key = (lost, cause)
        if key != self._cause or (new_outage and now - self._logged_at >= self.repeat_s):
            self._cause, self._logged_at, self._since, self._announced = key, now, 0, True
            log.warning("MQTT %s: %s", what, cause)
        elif now - self._logged_at >= self.repeat_s:
            minutes = (now - self._logged_at) / 60
            log.warning("MQTT %s: %s (again; %d attempts in the last %.0f min)", what, cause, self._since + 1, minutes)
            self._logged_at, self._since, self._announced = now, 0, True
        else:
            self._since += 1
            log.debug("MQTT %s: %s (repeat, not logged)", what, cause)

    def connected(self, detail: str) -> None:
        now = self._clock()
        if self._down_since is not None and self._announced:
            log.info(
                "MQTT connected to %s after %d failed attempts in %.0f s (%s)",
                self.target,
                self._attempts,
                now - self._down_since,
                detail,
            )
        elif not self._ever_connected:
            log.info("MQTT connected to %s (%s)", self.target, detail)
        else:
            log.debug("MQTT connected to %s (%s)", self.target, detail)
        self._ever_connected = True
        self._down_since = None
        self._attempts = 0


def _no_write_callback(client: Any, userdata: Any, sock: Any) -> None:
    # Registered only so paho never writes from the publishing thread (see the module docstring).
    return None


class NetworkLoop:
    """Connects, reconnects with capped exponential backoff, runs paho's ``loop()``; one thread.

    The owner's paho callbacks report to it: :meth:`connected`, :meth:`refused` (CONNACK with a
    failure reason code), :meth:`disconnected`. ``failures`` counts failed connect attempts.
    """

    def __init__(
        self,
        client: mqtt.Client,
        host: str,
        port: int,
        keepalive: int,
        *,
        properties: Any = None,
        min_delay: float = 1.0,
        max_delay: float = 60.0,
        stall_s: float = STALL_S,
        name: str = "footfall-mqtt",
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        # Told when loop() fails without paho calling on_disconnect (see _run).
        self.on_lost = on_lost
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.properties = properties
        self.min_delay = max(0.01, min_delay)
        self.max_delay = max(self.min_delay, max_delay)
        self.stall_s = stall_s
        # A broker that accepts TCP (and TLS) but never answers CONNECT would hold us for ever.
        self.connack_timeout = max(10.0, float(keepalive))
        self.log = ConnectionLog(f"{host}:{port}")
        self.failures = 0
        self._delay = self.min_delay
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._beat = time.monotonic()
        self._death: str | None = None
        self._reported = False
        self._lock = threading.Lock()
        self._opened: float | None = None  # socket open, CONNACK not yet in
        self._attempt_reported = False
        self._disconnects = 0  # calls of disconnected(): did paho's on_disconnect fire?
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    # -- lifecycle (owner's thread) --------------------------------------------------------------

    def start(self) -> None:
        self.client.on_socket_register_write = _no_write_callback
        # clean_start=False: resume the session (and the config subscription) after a reconnect.
        self.client.connect_async(
            self.host, self.port, keepalive=self.keepalive, clean_start=False, properties=self.properties
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the loop; a DISCONNECT queued just before still goes out (within ``timeout``)."""
        self._stop_deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            # A connect attempt in progress can block for paho's connect_timeout and the resolver.
            self._thread.join(timeout + self.client.connect_timeout + 1.0)

    @property
    def dead(self) -> str | None:
        """Why networking stopped for good while the process lives, or None while it works."""
        if self._death is None and self._thread.ident is not None and not self._stop.is_set():
            if not self._thread.is_alive():
                self._death = "the network thread ended"
            elif time.monotonic() - self._beat > self.stall_s:
                self._death = f"the network loop made no progress for {time.monotonic() - self._beat:.0f} s"
        if self._death is not None:
            self._report()
        return self._death

    def _report(self) -> None:
        with self._lock:
            if self._reported:
                return
            self._reported = True
        log.critical(
            "MQTT network loop is dead (%s): nothing more reaches the broker; the agent exits "
            "so that its service manager restarts it",
            self._death,
        )

    # -- from the owner's paho callbacks (this loop's thread) ------------------------------------

    def connected(self, detail: str) -> None:
        self._opened = None
        self._delay = self.min_delay
        self.log.connected(detail)

    def refused(self, cause: str) -> None:
        self._attempt_failed(f"broker refused the connection: {cause}")

    def disconnected(self, reason: str, was_connected: bool, *, report: bool = True) -> None:
        """The socket is gone (paho's on_disconnect). ``report=False``: closing, nothing to log."""
        self._disconnects += 1
        if not report:
            return
        if was_connected:
            self.log.failed(reason, lost=True)
        elif not self._attempt_reported and not self._stop.is_set():
            self._attempt_failed(f"connection closed before the broker accepted it ({reason})")

    # -- the loop --------------------------------------------------------------------------------

    def _attempt_failed(self, cause: str) -> None:
        self._attempt_reported = True
        self._opened = None
        self.failures += 1
        self.log.failed(cause)

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - whatever escapes ends networking: say so
            self._death = f"{type(exc).__name__}: {exc}"
            log.debug("MQTT network loop traceback", exc_info=True)
            self._report()

    def _run(self) -> None:
        connected = False  # a socket is open (CONNACK or not)
        disconnects = 0  # self._disconnects when it opened
        while True:
            self._beat = time.monotonic()
            if self._stop.is_set() and (not connected or time.monotonic() > self._stop_deadline):
                return
            if not connected:
                self._attempt_reported = False
                try:
                    self.client.reconnect()
                except OSError as exc:
                    # socket.gaierror, ConnectionRefusedError, ssl.SSLCertVerificationError, ...:
                    # the network or the broker, worth retrying. Anything else escapes to _main.
                    self._attempt_failed(describe(exc, self.host))
                    self._backoff()
                    continue
                connected = True
                self._opened = time.monotonic()
                disconnects = self._disconnects
            rc = self.client.loop(timeout=LOOP_TIMEOUT)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                # The socket is gone. paho usually calls on_disconnect first, but not on every
                # path (select() failing on a socket closed under it returns CONN_LOST, a socket
                # already gone NO_CONN): without this the owner would go on thinking it is
                # connected, and new messages could overtake the ones paho resends.
                connected = False
                if self._disconnects == disconnects and self.on_lost is not None:
                    self.on_lost(f"network loop failed: {mqtt.error_string(rc).rstrip('.')}")
                if not self._stop.is_set():
                    self._backoff()
            elif self._opened is not None and time.monotonic() - self._opened > self.connack_timeout:
                self._attempt_failed(f"no CONNACK from the broker within {self.connack_timeout:.0f} s")
                self.client.disconnect()

    def _backoff(self) -> None:
        # Jitter spreads the reconnects of a store's sensors after the hub comes back.
        end = time.monotonic() + self._delay * random.uniform(0.8, 1.0)
        self._delay = min(self._delay * 2, self.max_delay)
        while not self._stop.is_set():
            self._beat = time.monotonic()
            remaining = end - self._beat
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, LOOP_TIMEOUT))


class Watchdog:
    """Polls ``dead()`` on a daemon thread; on the first reason it calls ``on_dead()`` once.

    ``footfall agent run`` stops capture with it, so the process exits non-zero and systemd or
    procd restart it instead of leaving an agent that only fills its disk buffer.
    """

    def __init__(self, dead: Callable[[], str | None], on_dead: Callable[[], None], interval: float = 1.0) -> None:
        self._dead = dead
        self._on_dead = on_dead
        self.interval = interval
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="footfall-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            reason = self._dead()
            if reason is not None:
                self.reason = reason
                self._on_dead()
                return
