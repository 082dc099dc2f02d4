"""Throughput of Publisher (disk buffer + QoS 1 + PUBACK-driven acks) against raw paho.

Both sides publish the same small presence payloads at QoS 1 to the same local Mosquitto and
stop the clock when the broker has acknowledged the last one. The baseline is paho alone with
no buffer and no validation: the ratio is what store-and-forward costs.

    .venv/bin/python tools/bench/bench_publish.py [--messages 20000] [--rounds 3] [--window 100]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from footfall import topics
from footfall.edge_agent.buffer import DiskBuffer
from footfall.edge_agent.publish import Publisher
from footfall.payloads import dumps, presence_payload
from footfall.tools.broker import Broker

SITE, SENSOR = "bench", "sensor-1"


def cpu_seconds() -> float:
    """CPU of this process, all threads (the broker is a separate process, not counted)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def payloads(n: int) -> list[dict]:
    return [
        presence_payload(site=SITE, sensor=SENSOR, ts=1_700_000_000 + i, window_s=60, devices=3 + i % 50, inside=3)
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
        client.publish(topic, dumps(m), qos=1)
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
    size = statistics.mean(len(dumps(m)) for m in msgs)
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir / "broker").start()
        port = broker.port
        try:
            raw_times, buf_times, returned_times, raw_cpu, buf_cpu = [], [], [], [], []
            for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both alike
                before = cpu_seconds()
                raw_times.append(run_raw(port, msgs))
                raw_cpu.append(cpu_seconds() - before)
                before = cpu_seconds()
                elapsed, returned = run_buffered(port, msgs, workdir / "outbox.db", args.window)
                buf_cpu.append(cpu_seconds() - before)
                buf_times.append(elapsed)
                returned_times.append(returned)
        finally:
            broker.stop()
    raw, buffered = statistics.median(raw_times), statistics.median(buf_times)
    print(f"{args.messages} presence messages of ~{size:.0f} bytes, QoS 1, local Mosquitto, median of {args.rounds}")
    print(f"  raw paho publish (baseline):     {args.messages / raw:9.0f} msg/s  ({raw:.2f} s)")
    print(
        f"  Publisher via disk buffer:       {args.messages / buffered:9.0f} msg/s  ({buffered:.2f} s to broker-acked"
        f" and deleted; publish() calls returned after {statistics.median(returned_times):.2f} s)"
    )
    print(f"  ratio buffered / raw:            {raw / buffered:9.2f}")
    # On a shared machine wall time swings with the neighbours; CPU per message does not.
    per_raw = statistics.median(raw_cpu) / args.messages * 1e6
    per_buf = statistics.median(buf_cpu) / args.messages * 1e6
    print(
        f"  client CPU per message:          {per_raw:6.0f} us raw, {per_buf:.0f} us buffered"
        f" (ratio {per_raw / per_buf:.2f})"
    )


if __name__ == "__main__":
    main()
