"""BulkReadClient's stream parser: every PUBLISH out, whatever the TCP segmentation.

The real broker path is covered by tests/test_hub_ingest.py (including kill -9); a broker never
splits packets at every possible byte, so this feeds a crafted stream (QoS 0/1, retain flags,
MQTT 5 properties, pings for paho's own handler, payloads up to 20 KB) through recv() calls of
random sizes from 1 byte to 70 KB and checks that exactly the published messages come out.
"""

import random
import struct

import paho.mqtt.client as mqtt

from footfall.hub.ingest import BulkReadClient


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 127
        n >>= 7
        out.append(b | (128 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, qos: int, mid: int, retain: int, props: bytes = b"") -> bytes:
    vh = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + varint(len(props)) + props
    body = vh + payload
    return bytes([0x30 | (qos << 1) | retain]) + varint(len(body)) + body


def test_publishes_survive_any_segmentation():
    rng = random.Random(3)
    expected, stream = [], bytearray()
    for i in range(3000):
        r = rng.random()
        if r < 0.05:
            stream += b"\xd0\x00"  # PINGRESP -> paho handler
            continue
        topic = f"footfall/s/x{i % 7}/visit".encode()
        payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 5, 200, 20000])))
        qos = 1 if r < 0.9 else 0
        mid = rng.randint(1, 65535)
        props = rng.choice([b"", b"\x01\x01", b"\x23\x00\x05"])  # payload format, topic alias-ish bytes (skipped)
        retain = int(rng.random() < 0.1)
        stream += publish(topic, payload, qos, mid if qos else 0, retain, props)
        expected.append((topic, payload, retain, mid if qos else 0, qos))
    got = []
    c = BulkReadClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, sink=lambda *a: got.append(a))

    class Segments:  # hands out the stream in random-size pieces, as TCP may
        pos = 0

        def recv(self, n):
            if self.pos >= len(stream):
                raise BlockingIOError
            k = min(n, rng.choice([1, 2, 3, 7, 100, 5000, 70000]))
            d = bytes(stream[self.pos : self.pos + k])
            self.pos += k
            return d

    c._sock = Segments()
    while True:
        rc = c._packet_read()
        if rc == mqtt.MQTT_ERR_AGAIN:
            break
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
    assert got == expected, (len(got), len(expected))
    assert not c._rbuf
    c._sock = None  # the fake segment source is not a socket paho could close
