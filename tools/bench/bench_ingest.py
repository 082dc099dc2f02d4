"""Sustained ingest rate: visit messages from a real Mosquitto into the hub's SQLite.

Starts its own Mosquitto on a free port, registers two persistent QoS-1 sessions (the hub's
and a baseline's), pre-publishes N visit messages while both are offline (the broker queues
them), then drains each session and times it:

- baseline: a bare paho subscriber that only counts messages (auto-ack, no parsing, no DB);
- hub: ``footfall.hub.ingest.Ingestor`` (validate, dedupe, merge, SQLite commit, then ack).

Prints both rates and their ratio, i.e. what validation + merging + the database cost on top of
receiving. Rates are given per wall-clock second and per CPU second of this process: on a
shared machine the wall rate measures the neighbours too, while the CPU rate is what one
dedicated core would sustain (Mosquitto runs in its own process). Usage::

    .venv/bin/python -m footfall.tools.bench.bench_ingest --messages 100000 [--batch-max 5000] [--prefill 1000000]

``--batch-max`` defaults to the hub's configured ``IngestConfig.batch_max``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from footfall import schema, topics
from footfall.hub import store
from footfall.hub.config import HubConfig, IngestConfig, MqttConfig
from footfall.hub.ingest import Ingestor, ingest_many

SITE = "bench"
SENSORS = ("s1", "s2", "s3")


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
    n: int, seed: int = 7, *, t0: float | None = None, span_s: float = 80000.0, devices: int = 0
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
        sensors = rng.sample(SENSORS, 2 if rng.random() < 0.33 else 1)
        for k, sensor in enumerate(sensors):
            f = first + k * rng.uniform(0, 30)
            rssi = rng.randint(-90, -40)
            payload = schema.visit_payload(
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
            out.append((topics.topic(SITE, sensor, "visit"), schema.dumps(payload)))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "-n", type=int, default=100_000)
    parser.add_argument("--batch-max", type=int, default=IngestConfig.batch_max, help="hub batch size (config default)")
    parser.add_argument(
        "--prefill", type=int, default=0, help="visit messages of the last 90 days stored first (0: empty db)"
    )
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir)
        try:
            payloads = make_payloads(n)
            for cid in ("bench-hub", "bench-baseline"):
                register_session(port, cid)
            pub_s = publish_all(port, payloads)
            print(f"pre-published {n} visit messages (QoS 1) in {pub_s:.1f}s: {n / pub_s:,.0f} msg/s")
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
            hub_s, hub_cpu, ingestor = drain_hub(port, n, db, args.batch_max)
            hub_rate = n / hub_s
            conn = store.connect(db)
            stored = conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0] - before
            visits = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
            size = sum(os.path.getsize(p) for p in workdir.glob("hub.db*"))
            s = ingestor.stats
            print(
                f"hub ingest into SQLite (validate, dedupe, merge, commit, ack): {hub_rate:,.0f} msg/s wall"
                f" ({hub_s:.2f}s), {n / hub_cpu:,.0f} msg/CPU-s;"
                f" {stored} sensor visits -> {s.created_visits - s.merged_visits} new store visits"
                f" ({visits} in the database, {size / 1e6:.0f} MB) in {s.batches} batches"
            )
            print(
                f"ratio hub / baseline: {hub_rate / base_rate:.2f} wall, {base_cpu / hub_cpu:.2f} CPU"
                f"  (target: >= 10,000 msg/s on one core); load average now {os.getloadavg()[0]:.1f}"
            )
            if stored != n:
                raise SystemExit(f"expected {n} stored, got {stored}")
        finally:
            broker.terminate()
            broker.wait(10)


if __name__ == "__main__":
    main()
