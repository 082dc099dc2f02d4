"""Throughput of Publisher (disk buffer + QoS 1 + PUBACK-driven acks) against raw paho.

Both sides publish the same small presence payloads at QoS 1 to the same local Mosquitto and
stop the clock when the broker has acknowledged the last one. The baseline is paho alone with
no buffer and no validation: the ratio is what store-and-forward costs.

    .venv/bin/python tools/bench/bench_publish.py [--messages 20000] [--rounds 3] [--window 100]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from footfall import schema, topics
from footfall.edge_agent.buffer import DiskBuffer
from footfall.edge_agent.publish import Publisher

SITE, SENSOR = "bench", "sensor-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("mosquitto did not start") from None
            time.sleep(0.05)


def payloads(n: int) -> list[dict]:
    return [
        schema.presence_payload(site=SITE, sensor=SENSOR, ts=1_700_000_000 + i, window_s=60, devices=i % 50, inside=3)
        for i in range(n)
    ]


def run_raw(port: int, msgs: list[dict]) -> float:
    """paho alone: serialize and publish QoS 1, done at the last PUBACK."""
    done = threading.Event()
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(msgs):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = topics.topic(SITE, SENSOR, "presence")
    start = time.perf_counter()
    for m in msgs:
        client.publish(topic, schema.dumps(m), qos=1)
    if not done.wait(300):
        raise RuntimeError("raw publish did not finish")
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return elapsed


def run_buffered(port: int, msgs: list[dict], db: Path, window: int) -> tuple[float, float]:
    """Publisher: validate, commit to SQLite, send in order, delete on PUBACK. Done when empty."""
    with DiskBuffer(db) as buf:
        pub = Publisher(SITE, SENSOR, "127.0.0.1", port, buf, client_id="bench-buffered", window=window).start()
        while not pub.connected:
            time.sleep(0.01)
        start = time.perf_counter()
        for m in msgs:
            pub.publish("presence", m)
        returned = time.perf_counter() - start
        if not pub.flush(300):
            raise RuntimeError(f"buffered publish did not finish: {pub.stats()}")
        elapsed = time.perf_counter() - start
        pub.close()
    db.unlink()
    return elapsed, returned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()
    msgs = payloads(args.messages)
    size = statistics.mean(len(schema.dumps(m)) for m in msgs)
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir)
        try:
            raw_times, buf_times, returned_times = [], [], []
            for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both alike
                raw_times.append(run_raw(port, msgs))
                elapsed, returned = run_buffered(port, msgs, workdir / "outbox.db", args.window)
                buf_times.append(elapsed)
                returned_times.append(returned)
        finally:
            broker.terminate()
            broker.wait(5)
    raw, buffered = statistics.median(raw_times), statistics.median(buf_times)
    print(f"{args.messages} presence messages of ~{size:.0f} bytes, QoS 1, local Mosquitto, median of {args.rounds}")
    print(f"  raw paho publish (baseline):     {args.messages / raw:9.0f} msg/s  ({raw:.2f} s)")
    print(
        f"  Publisher via disk buffer:       {args.messages / buffered:9.0f} msg/s  ({buffered:.2f} s to broker-acked"
        f" and deleted; publish() calls returned after {statistics.median(returned_times):.2f} s)"
    )
    print(f"  ratio buffered / raw:            {raw / buffered:9.2f}")


if __name__ == "__main__":
    main()
