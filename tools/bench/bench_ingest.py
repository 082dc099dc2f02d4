"""Draining a store's backlog: visit messages from a real Mosquitto into the hub's SQLite.

Starts its own Mosquitto on a free port, registers two persistent QoS-1 sessions (the hub's
and a baseline's), pre-publishes N visit messages of a day of a ``--sensors``-sensor store
while both are offline (the broker queues them, as it does while the hub is down), then drains
each session and times it:

- baseline: a bare paho subscriber that only counts messages (auto-ack, no parsing, no DB);
- hub: ``footfall.hub.ingest.Ingestor`` (validate, dedupe, merge, SQLite commit, then ack).

Prints both rates, their ratio (what validation, merging and the database cost on top of
receiving) and the hub's time to drain the backlog against the target: a day of a 10-sensor
store (about 200,000 visits) in under 5 minutes. Rates are given per wall-clock second and per
CPU second of this process: on a shared machine the wall rate measures the neighbours too, while
the CPU rate is what one dedicated core would sustain (Mosquitto runs in its own process).

Meanwhile a separate process plays the dashboard (the real ASGI app on the same database file,
as ``footfall hub serve`` runs beside ``footfall hub run``) and times ``/api/now`` and today's
hourly footfall every 0.2 s during the drain and again once it is idle: the backlog must not make
the dashboard wait. Usage::

    .venv/bin/python -m footfall.tools.bench.bench_ingest [--messages 200000] [--sensors 10] [--prefill 1000000]

``--batch-max`` defaults to the hub's configured ``IngestConfig.batch_max``.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from footfall import topics
from footfall.hub import store
from footfall.hub.config import HubConfig, IngestConfig, MqttConfig
from footfall.hub.ingest import Ingestor, ingest_many
from footfall.payloads import dumps, visit_payload

SITE = "bench"
SENSORS = tuple(f"s{i}" for i in range(1, 11))  # a 10-sensor store
# The target: a day of a 10-sensor store (about 200,000 visits) drained in under 5 minutes.
TARGET_DRAIN_S = 300.0
DASHBOARD_EVERY_S = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmessage_size_limit 1048576\n"
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def make_payloads(
    n: int,
    seed: int = 7,
    *,
    t0: float | None = None,
    span_s: float = 80000.0,
    devices: int = 0,
    sensors: Sequence[str] = SENSORS,
) -> list[tuple[str, bytes]]:
    """A busy store's visits: a third of the devices seen by two sensors at once (merged).

    Visits start within ``span_s`` after ``t0`` (default: a day ago). With ``devices`` > 0 they
    are drawn from that many devices (returning visitors), else every device is new.
    """
    rng = random.Random(seed)
    if t0 is None:
        t0 = time.time() - 86400
    out: list[tuple[str, bytes]] = []
    i = 0
    while len(out) < n:
        who = rng.randrange(devices) if devices else i
        device = hashlib.sha256(f"dev{who}".encode()).hexdigest()[:32]
        first = t0 + rng.uniform(0, span_s)
        dwell = rng.choice((rng.uniform(5, 60), rng.uniform(120, 3600)))
        seen_by = rng.sample(sensors, 2 if rng.random() < 0.33 else 1)
        for k, sensor in enumerate(seen_by):
            f = first + k * rng.uniform(0, 30)
            rssi = rng.randint(-90, -40)
            payload = visit_payload(
                site=SITE,
                sensor=sensor,
                device=device,
                randomized=rng.random() < 0.6,
                first_seen=f,
                last_seen=f + dwell,
                inside_s=dwell * 0.7,
                sightings=rng.randint(1, 200),
                rssi_max=rssi,
                rssi_mean=rssi - 6.5,
                visit_class="visitor" if dwell > 300 else "passerby",
                long_stay=False,
                fingerprint=f"fp{rng.randint(0, 40)}",
                ie_ids=[0, 1, 50, 45, 127, 221],
                channels=[1, 6, 11],
                seq_first=rng.randint(0, 4000),
                seq_last=rng.randint(0, 4000),
            )
            out.append((topics.topic(SITE, sensor, "visit"), dumps(payload)))
        i += 1
    return out[:n]


def v5_connect(client: mqtt.Client, port: int) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 20000
    client.connect("127.0.0.1", port, 60, clean_start=False, properties=props)


def register_session(port: int, client_id: str) -> None:
    """Create the persistent session and its subscription, then go offline."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    v5_connect(client, port)
    client.subscribe(topics.site_filter(SITE), options=SubscribeOptions(qos=1))
    client.loop_start()
    if not done.wait(10):
        raise RuntimeError("subscription not acknowledged")
    client.disconnect()
    client.loop_stop()


def publish_all(port: int, payloads: list[tuple[str, bytes]]) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    t = time.perf_counter()
    # In chunks: MQTT packet ids wrap at 65535, so paho refuses more unacknowledged messages.
    for start in range(0, len(payloads), 10_000):
        infos = [client.publish(topic, raw, qos=1) for topic, raw in payloads[start : start + 10_000]]
        for info in infos:
            info.wait_for_publish(60)
    elapsed = time.perf_counter() - t
    client.disconnect()
    client.loop_stop()
    return elapsed


def drain_baseline(port: int, n: int) -> tuple[float, float]:
    """Bare paho: count messages, auto-ack; (wall, CPU) seconds until all n arrived."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-baseline", protocol=mqtt.MQTTv5)
    count = 0

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count >= n:
            c.disconnect()

    client.on_message = on_message
    t, c = time.perf_counter(), time.process_time()
    v5_connect(client, port)
    client.loop_forever()
    return time.perf_counter() - t, time.process_time() - c


def prefill(db: Path, n: int) -> float:
    """Fill the hub database with ``n`` visit messages of the last 90 days (returning devices):
    ingest cost grows with what is stored, so an empty database flatters it. Returns seconds."""
    cfg = HubConfig(site=SITE, db=str(db), ingest=IngestConfig(batch_max=5000), link_every_s=0)
    conn = store.connect(db)
    t = time.perf_counter()
    chunk = 200_000
    for k, start in enumerate(range(0, n, chunk)):
        span = 89 * 86400 / max(1, -(-n // chunk))
        t0 = time.time() - 90 * 86400 + k * span
        ingest_many(conn, make_payloads(min(chunk, n - start), seed=100 + k, t0=t0, span_s=span, devices=n // 4), cfg)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t


def drain_hub(port: int, n: int, db: Path, batch_max: int = 1000) -> tuple[float, float, Ingestor]:
    cfg = HubConfig(
        site=SITE,
        db=str(db),
        # Relinking is a job beside ingest (measured by bench_link); left on, its first pass ran
        # at a random moment of the drain and linked the random MACs stored so far, so the
        # store-visit count changed from run to run.
        link_every_s=0,
        mqtt=MqttConfig(port=port, client_id="bench-hub", receive_maximum=20000),
        ingest=IngestConfig(batch_max=batch_max, batch_ms=50, housekeeping_s=1e9),
    )
    ingestor = Ingestor(cfg)
    thread = threading.Thread(target=ingestor.run, daemon=True)
    t, c = time.perf_counter(), time.process_time()
    thread.start()
    while ingestor.stats.stored + ingestor.stats.duplicates < n:
        time.sleep(0.005)
        if not thread.is_alive():
            raise RuntimeError("ingest stopped early")
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    ingestor.stop()
    thread.join(10)
    return elapsed, cpu, ingestor


def dashboard_probe(db: str, ready: Any, idle: Any, stop: Any, out: Any) -> None:
    """Child process: the dashboard app on the hub's database, called every DASHBOARD_EVERY_S.

    Puts ``({"drain": [ms, ...], "idle": [ms, ...]}, failed_calls)`` on ``out``: a separate
    process (not a thread) because ``footfall hub serve`` is one, and a thread would measure
    the GIL shared with ingest instead of the database.
    """
    with warnings.catch_warnings():  # a deprecation notice of the test client's httpx, not ours
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from footfall.hub import auth
    from footfall.hub.api import WebSettings, create_app

    conn = store.connect(db)
    key = auth.create_api_key(conn, f"bench-{os.getpid()}")
    conn.close()
    # The default settings, summary refresher included: it writes beside ingest in production too.
    app = create_app(db, WebSettings(tz="UTC"))
    today = datetime.now(UTC).date().isoformat()
    paths = ("/api/now", f"/api/footfall?start={today}&end={today}&granularity=hour")
    times: dict[str, list[float]] = {"drain": [], "idle": []}
    failed = 0
    with TestClient(app, headers={"X-API-Key": key}) as client:
        for path in paths:  # warm up, and fail early on a broken app rather than time errors
            r = client.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {r.status_code} {r.text[:200]}")
        ready.set()
        while not stop.is_set():
            phase = "idle" if idle.is_set() else "drain"
            for path in paths:
                t = time.perf_counter()
                r = client.get(path)
                times[phase].append(1000 * (time.perf_counter() - t))
                failed += r.status_code != 200
            stop.wait(DASHBOARD_EVERY_S)
    out.put((times, failed))


class Dashboard:
    """Runs :func:`dashboard_probe` beside the drain; ``None`` results if the app cannot start."""

    def __init__(self, db: Path) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of this process's threads and sockets
        self.ready, self.idle, self.stop = ctx.Event(), ctx.Event(), ctx.Event()
        self.out = ctx.Queue()
        self.proc = ctx.Process(target=dashboard_probe, args=(str(db), self.ready, self.idle, self.stop, self.out))
        self.proc.start()
        if not self.ready.wait(120):
            self.proc.terminate()
            raise RuntimeError("the dashboard probe did not start (see its traceback above)")

    def finish(self, idle_s: float = 3.0) -> tuple[dict[str, list[float]], int]:
        self.idle.set()
        time.sleep(idle_s)
        self.stop.set()
        result = self.out.get(timeout=60)
        self.proc.join(30)
        return result


def _latency(values: list[float]) -> str:
    if not values:
        return "no calls"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.0f} ms, p95 {p95:.0f} ms, max {ordered[-1]:.0f} ms ({len(ordered)} calls)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "-n", type=int, default=200_000, help="visit messages in the backlog")
    parser.add_argument("--sensors", type=int, default=len(SENSORS), help="sensors of the store")
    parser.add_argument("--batch-max", type=int, default=IngestConfig.batch_max, help="hub batch size (config default)")
    parser.add_argument(
        "--prefill", type=int, default=0, help="visit messages of the last 90 days stored first (0: empty db)"
    )
    parser.add_argument("--no-dashboard", action="store_true", help="do not time the dashboard during the drain")
    args = parser.parse_args()
    n = args.messages
    sensors = tuple(f"s{i}" for i in range(1, args.sensors + 1))
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir)
        try:
            payloads = make_payloads(n, sensors=sensors)
            for cid in ("bench-hub", "bench-baseline"):
                register_session(port, cid)
            pub_s = publish_all(port, payloads)
            print(
                f"backlog: {n:,} visit messages of {len(sensors)} sensors queued (QoS 1) for two persistent"
                f" sessions in {pub_s:.1f}s"
            )
            base_s, base_cpu = drain_baseline(port, n)
            base_rate = n / base_s
            print(
                f"baseline bare paho subscriber (count only): {base_rate:,.0f} msg/s wall ({base_s:.2f}s),"
                f" {n / base_cpu:,.0f} msg/CPU-s"
            )
            db = workdir / "hub.db"
            if args.prefill:
                took = prefill(db, args.prefill)
                print(f"prefilled the hub database with {args.prefill:,} older visit messages in {took:.0f}s")
            before = store.connect(db).execute("SELECT count(*) FROM sensor_visits").fetchone()[0]
            dashboard = None if args.no_dashboard else Dashboard(db)
            hub_s, hub_cpu, ingestor = drain_hub(port, n, db, args.batch_max)
            dash = dashboard.finish() if dashboard else None
            hub_rate = n / hub_s
            conn = store.connect(db)
            stored = conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0] - before
            visits = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
            size = sum(os.path.getsize(p) for p in workdir.glob("hub.db*"))
            s = ingestor.stats
            verdict = "met" if hub_s < TARGET_DRAIN_S else "MISSED"
            print(
                f"hub ingest into SQLite (validate, dedupe, merge, commit, ack): {hub_rate:,.0f} msg/s wall,"
                f" {n / hub_cpu:,.0f} msg/CPU-s; {stored} sensor visits -> {s.created_visits - s.merged_visits}"
                f" new store visits ({visits} in the database, {size / 1e6:.0f} MB) in {s.batches} batches"
            )
            print(
                f"drain of the {n:,}-visit backlog: {hub_s:.1f}s wall, {hub_cpu:.1f}s CPU"
                f" (target: under {TARGET_DRAIN_S:.0f}s: {verdict})"
            )
            print(
                f"ratio hub / bare subscriber: {hub_rate / base_rate:.2f} wall, {base_cpu / hub_cpu:.2f} CPU;"
                f" load average now {os.getloadavg()[0]:.1f}"
            )
            if dash is not None:
                times, failed = dash
                print(f"dashboard (/api/now + today by hour) during the drain: {_latency(times['drain'])}")
                print(f"dashboard afterwards, idle: {_latency(times['idle'])}; failed calls: {failed}")
            if stored != n:
                raise SystemExit(f"expected {n} stored, got {stored}")
        finally:
            broker.terminate()
            broker.wait(10)


if __name__ == "__main__":
    main()
