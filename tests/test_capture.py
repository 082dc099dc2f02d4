"""Live capture sources, through real kernel interfaces.

No Wi-Fi hardware (and no mac80211_hwsim) is needed for the live path: a TUN device whose link
type is set to 803 (ARPHRD_IEEE80211_RADIOTAP, via the TUNSETLINK ioctl) is, to the kernel's
packet layer, a radiotap interface: frames written to its file descriptor are received on it
exactly as a monitor interface receives them, and `/sys/class/net/<if>/type` reads 803, so the
monitor-mode check passes without being bypassed. A veth pair carries the same frames as
"ethernet" (that one needs `require_monitor=False`). Both need root; they skip otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from footfall.edge_agent import bpf, interfaces
from footfall.edge_agent.capture import FrameSource, open_source
from footfall.edge_agent.channels import ChannelError, ChannelHopper
from footfall.edge_agent.interfaces import CaptureError
from footfall.edge_agent.rawsocket import RawSocketSource
from footfall.edge_agent.scapysource import ScapySource

TUNSETIFF = 0x400454CA
TUNSETLINK = 0x400454CD
IFF_TUN = 0x0001
ETH_P_802_2 = 0x0004  # what mac80211 stamps on monitor frames; any non-IP value would do

_names = itertools.count()


def ifname(prefix: str) -> str:
    """Unique per process and call: other engineers' test runs share this kernel."""
    return f"{prefix}{os.getpid() % 100000}{next(_names)}"[:15]


def read_pcap(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        yield data[off + 16 : off + 16 + incl]
        off += 16 + incl


def with_fc(frame: bytes, fc0: int) -> bytes:
    out = bytearray(frame)
    out[frame[2] | frame[3] << 8] = fc0
    return bytes(out)


def non_probes(frame: bytes) -> list[bytes]:
    hdr = frame[2] | frame[3] << 8
    # beacon, probe response, data, QoS data, ACK, protocol-version-1 "probe", truncated header
    return [with_fc(frame, fc) for fc in (0x80, 0x50, 0x08, 0x88, 0xD4, 0x41)] + [frame[: hdr + 23]]


@pytest.fixture(scope="module")
def real_frames(captures: list[Path]) -> list[bytes]:
    return [f for path in captures for f in read_pcap(path)]


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("live capture tests need root (CAP_NET_ADMIN to create interfaces, CAP_NET_RAW to capture)")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 `ip` is not installed")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def no_ipv6(name: str) -> None:
    # Keeps router solicitations and friends off the test interfaces.
    knob = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    with contextlib.suppress(OSError):
        knob.write_text("1")


class TunMonitor:
    """A TUN device with link type 803: `inject()` makes the kernel receive a radiotap frame on it."""

    def __init__(self) -> None:
        self.name = ifname("fftun")
        self.fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH22x", self.name.encode(), IFF_TUN))
            fcntl.ioctl(self.fd, TUNSETLINK, interfaces.ARPHRD_IEEE80211_RADIOTAP)
        except OSError:
            os.close(self.fd)
            raise
        no_ipv6(self.name)

    def up(self) -> TunMonitor:
        ip("link", "set", self.name, "up")
        return self

    def inject(self, frame: bytes) -> None:
        os.write(self.fd, struct.pack("!HH", 0, ETH_P_802_2) + frame)  # tun_pi: flags, protocol

    def remove(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # a non-persistent TUN device disappears with its last descriptor
            self.fd = -1


@pytest.fixture
def tun_monitor() -> Iterator[TunMonitor]:
    need_root()
    if not Path("/dev/net/tun").exists():
        pytest.skip("/dev/net/tun is missing (kernel without CONFIG_TUN)")
    try:
        tun = TunMonitor()
    except OSError as exc:
        pytest.skip(f"cannot create a TUN device with link type 803: {exc}")
    yield tun
    tun.remove()


@pytest.fixture
def veth() -> Iterator[tuple[str, str, socket.socket]]:
    """(receiving end, sending end, raw socket sending on it)."""
    need_root()
    rx, tx = ifname("ffvr"), ifname("ffvt")
    try:
        ip("link", "add", rx, "type", "veth", "peer", "name", tx)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a veth pair: {exc.stderr.strip()}")
    try:
        for name in (rx, tx):
            no_ipv6(name)
            ip("link", "set", name, "up")
        sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sender.bind((tx, 0))
        with sender:
            yield rx, tx, sender
    finally:
        subprocess.run(["ip", "link", "del", rx], capture_output=True)


def collect(src: RawSocketSource | ScapySource, n: int, timeout: float = 5.0) -> list[tuple[float, bytes]]:
    got: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        item = src.read(0.2)
        if item is not None:
            got.append(item)
    return got


def pump(
    src: RawSocketSource | ScapySource, send: Callable[[bytes], object], frames: list[bytes], batch: int = 100
) -> list[bytes]:
    """Send `frames` plus non-probe variants in batches; return what the source received."""
    received: list[bytes] = []
    for i in range(0, len(frames), batch):
        chunk = frames[i : i + batch]
        for f in chunk:
            for bad in non_probes(f):
                send(bad)
            send(f)
        received += [data for _ts, data in collect(src, len(chunk))]
    assert src.read(0.3) is None, "a frame arrived that should have been dropped"
    return received


# --- the live path: real kernel, real frames ---------------------------------------------------


def test_tun_monitor_delivers_only_probe_requests_byte_exact(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    tun_monitor.up()
    with RawSocketSource(tun_monitor.name) as src:  # the monitor check runs for real: type is 803
        assert src.linktype == 127
        assert isinstance(src, FrameSource)
        received = pump(src, tun_monitor.inject, real_frames)
        stats = src.refresh_stats()
    assert received == real_frames  # every probe request, in order, byte for byte - and nothing else
    # The kernel filter, not Python, dropped the 7 non-probe variants per frame.
    assert stats["kernel_accepted"] == len(real_frames) == stats["frames"]
    assert stats["kernel_drops"] == 0 and stats["errors"] == 0 and stats["truncated"] == 0
    assert stats["bytes"] == sum(map(len, real_frames))


def test_kernel_timestamps(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    tun_monitor.up()
    with RawSocketSource(tun_monitor.name) as src:
        # The kernel turns receive timestamps on from a workqueue; until it has run, frames are
        # stamped at read time (only the first few after the very first timestamping socket opens).
        time.sleep(0.2)
        before = time.time()
        tun_monitor.inject(real_frames[0])
        time.sleep(0.5)  # the timestamp is taken when the kernel receives the frame, not when we read it
        ts, data = collect(src, 1)[0]
        read_at = time.time()
    assert data == real_frames[0]
    assert before - 0.01 <= ts <= read_at - 0.4, (before, ts, read_at)


def test_iteration_and_close_from_another_thread(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    tun_monitor.up()
    src = RawSocketSource(tun_monitor.name, poll_s=0.05)
    seen: list[bytes] = []

    def consume() -> None:
        for _ts, frame in src:
            seen.append(frame)

    reader = threading.Thread(target=consume)
    reader.start()
    for f in real_frames[:20]:
        tun_monitor.inject(f)
    deadline = time.monotonic() + 5
    while len(seen) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    src.close()
    reader.join(2)
    assert not reader.is_alive()
    assert seen == real_frames[:20]


def test_close_from_a_signal_handler_ends_iteration(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    """What `footfall agent run` does on SIGTERM: close the source from the handler mid-read."""
    tun_monitor.up()
    src = RawSocketSource(tun_monitor.name)
    tun_monitor.inject(real_frames[0])
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: src.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        started = time.monotonic()
        seen = [frame for _ts, frame in src]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert seen == [real_frames[0]]
    assert time.monotonic() - started < 5


def test_snaplen_truncates_in_kernel_and_is_counted(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    tun_monitor.up()
    frames = [f for f in real_frames if len(f) > 100][:30]
    with RawSocketSource(tun_monitor.name, snaplen=64) as src:
        for f in frames:
            tun_monitor.inject(f)
        got = [d for _ts, d in collect(src, len(frames))]
        assert got == [f[:64] for f in frames]
        assert src.stats["truncated"] == len(frames)


def test_kernel_drops_are_counted_and_logged_once(
    tun_monitor: TunMonitor, real_frames: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    tun_monitor.up()
    # The smallest receive queue the kernel allows holds a handful of frames; nobody reads.
    with RawSocketSource(tun_monitor.name, rcvbuf=1) as src:
        for f in real_frames[:200]:
            tun_monitor.inject(f)
        got = collect(src, 200, timeout=1.0)
        stats = dict(src.refresh_stats())
        for f in real_frames[200:400]:
            tun_monitor.inject(f)
        collect(src, 200, timeout=1.0)
        src.refresh_stats()
    assert 0 < len(got) < 200
    assert stats["kernel_drops"] == 200 - len(got)
    assert stats["kernel_accepted"] == 200  # matched the filter, whether queued or dropped
    assert src.stats["kernel_drops"] > stats["kernel_drops"]  # accumulated: the kernel resets on read
    assert sum("kernel dropped" in r.getMessage() for r in caplog.records) == 1


def test_set_filter_drains_frames_queued_under_the_old_filter(
    tun_monitor: TunMonitor, real_frames: list[bytes]
) -> None:
    tun_monitor.up()
    beacons = [with_fc(f, 0x80) for f in real_frames[:5]]
    with RawSocketSource(tun_monitor.name, program=bpf.accept_all_program()) as src:
        for b in beacons:
            tun_monitor.inject(b)
        time.sleep(0.05)
        src.set_filter(bpf.probe_request_program())
        assert src.stats["drained"] == 5  # accepted by the old filter, never handed out
        tun_monitor.inject(beacons[0])
        tun_monitor.inject(real_frames[0])
        assert [d for _ts, d in collect(src, 1)] == [real_frames[0]]
        assert src.read(0.2) is None


def test_interface_down_then_up_keeps_capturing(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    tun_monitor.up()
    with RawSocketSource(tun_monitor.name, poll_s=0.05) as src:
        tun_monitor.inject(real_frames[0])
        assert len(collect(src, 1)) == 1
        ip("link", "set", tun_monitor.name, "down")
        assert src.read(0.3) is None  # ENETDOWN: counted, not raised - the interface still exists
        assert src.stats["errors"] >= 1
        ip("link", "set", tun_monitor.name, "up")
        tun_monitor.inject(real_frames[1])
        assert [d for _ts, d in collect(src, 1)] == [real_frames[1]]


def test_interface_removed_during_capture_is_a_clear_error(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    tun_monitor.up()
    src = RawSocketSource(tun_monitor.name, poll_s=0.05)
    tun_monitor.inject(real_frames[0])
    assert len(collect(src, 1)) == 1
    tun_monitor.remove()
    with pytest.raises(CaptureError, match="went away"):
        collect(src, 1, timeout=3)
    assert src.stats["errors"] == 1
    src.close()


def test_veth_carries_radiotap_and_kernel_drops_non_probes(
    veth: tuple[str, str, socket.socket], real_frames: list[bytes]
) -> None:
    rx, _tx, sender = veth
    with pytest.raises(CaptureError, match="not a Wi-Fi interface in monitor mode"):
        RawSocketSource(rx)
    frames = real_frames[::3]  # a third of them keeps this quick; the TUN test sends all
    with RawSocketSource(rx, require_monitor=False) as src:
        assert src.linktype == interfaces.LINKTYPE_ETHERNET  # what the kernel says the link carries
        received = pump(src, sender.send, frames)
        stats = src.refresh_stats()
    assert received == frames
    assert stats["kernel_accepted"] == len(frames) and stats["kernel_drops"] == 0


def test_scapy_source_yields_the_same_frames(tun_monitor: TunMonitor, real_frames: list[bytes]) -> None:
    pytest.importorskip("scapy")
    tun_monitor.up()
    frames = real_frames[:300]
    with ScapySource(tun_monitor.name) as src:
        assert src.linktype == 127
        received = pump(src, tun_monitor.inject, frames)
        kernel_filter = src.stats["kernel_filter"]
    assert received == frames
    # Without libpcap scapy attaches no filter and the Python check does the dropping instead.
    with ScapySource(tun_monitor.name, kernel_filter=False) as src:
        received = pump(src, tun_monitor.inject, frames[:50])
        assert received == frames[:50]
        assert src.stats["filtered"] == 50 * 7
    try:
        from scapy.arch.common import compile_filter

        compile_filter(bpf.PROBE_REQUEST_FILTER, linktype=127)
        libpcap = 1
    except (ImportError, OSError):
        libpcap = 0
    assert kernel_filter == libpcap  # the in-kernel filter is used whenever libpcap can compile it


def test_open_source_specs(tun_monitor: TunMonitor) -> None:
    tun_monitor.up()
    # The agent's CLI passes the same options whatever the spec; `realtime` means nothing live.
    with contextlib.closing(open_source(f"iface:{tun_monitor.name}", realtime=False)) as src:
        assert isinstance(src, RawSocketSource)
    with contextlib.closing(open_source(f"scapy:{tun_monitor.name}")) as src:
        assert isinstance(src, ScapySource)
    with pytest.raises(CaptureError, match="did you mean iface:lo"):
        open_source("lo")
    with pytest.raises(CaptureError, match="unknown capture source"):
        open_source("usb:0")
    with pytest.raises(CaptureError, match="needs a file path"):
        open_source("pcap:")


def test_open_source_delegates_pcap_files(captures: list[Path]) -> None:
    try:
        from footfall.edge_agent import pcapfile  # noqa: F401 - written by another engineer
    except ImportError as exc:
        pytest.skip(f"edge_agent.pcapfile is not there yet: {exc}")
    for spec in (f"pcap:{captures[0]}", str(captures[0])):
        src = open_source(spec)
        assert isinstance(src, FrameSource), "PcapSource needs close(): the agent closes its source on SIGTERM"
        try:
            assert src.linktype == 127
            assert [f for _ts, f in src] == list(read_pcap(captures[0]))
        finally:
            src.close()


def test_open_source_refuses_captures_the_parser_cannot_decode(tmp_path: Path) -> None:
    from footfall.edge_agent.pcapfile import write_pcap

    ether = tmp_path / "wired.pcap"
    write_pcap(ether, [(1.0, bytes(60))], linktype=1)
    # at open, in one line: not a traceback at the first frame of `footfall agent run`
    with pytest.raises(CaptureError, match=r"wired.pcap: link type 1 \(Ethernet\); supported: 127 .* or 105"):
        open_source(f"pcap:{ether}")
    with pytest.raises(CaptureError, match="nosuch.pcap"):
        open_source(str(tmp_path / "nosuch.pcap"))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(CaptureError, match="not a pcap or pcapng capture"):
        open_source(f"pcap:{notes}")


# --- clear errors before opening ---------------------------------------------------------------


def test_missing_interface() -> None:
    with pytest.raises(CaptureError, match=r"does not exist .*iw phy phy0 interface add mon0 type monitor"):
        RawSocketSource("ffnosuch0")
    with pytest.raises(CaptureError, match="not a valid interface name"):
        RawSocketSource("../etc")


def test_not_monitor_mode_real_interface() -> None:
    with pytest.raises(CaptureError, match=r"link type 772, need 803"):
        RawSocketSource("lo")


def test_interface_down(tun_monitor: TunMonitor) -> None:
    with pytest.raises(CaptureError, match=f"is down: `ip link set {tun_monitor.name} up`"):
        RawSocketSource(tun_monitor.name)


def fake_sysfs(root: Path, name: str, arphrd: int, phy: str | None, flags: str = "0x1003") -> None:
    d = root / name
    (d / "phy80211").mkdir(parents=True) if phy else d.mkdir(parents=True)
    (d / "type").write_text(f"{arphrd}\n")
    (d / "flags").write_text(f"{flags}\n")
    if phy:
        (d / "phy80211" / "name").write_text(f"{phy}\n")


def test_wifi_interface_in_managed_mode_gets_the_iw_fix(tmp_path: Path) -> None:
    # No Wi-Fi card here: the sysfs layout of one (wlan0 in managed mode on phy1) stands in.
    fake_sysfs(tmp_path, "wlan0", 1, "phy1")
    fake_sysfs(tmp_path, "prism0", 802, "phy0")
    fake_sysfs(tmp_path, "mon0", 803, "phy0")
    with pytest.raises(CaptureError, match=r"iw dev wlan0 set type monitor.*iw phy phy1 interface add mon0"):
        interfaces.check_interface("wlan0", root=tmp_path)
    with pytest.raises(CaptureError, match="without radiotap"):
        interfaces.check_interface("prism0", root=tmp_path)
    assert interfaces.check_interface("mon0", root=tmp_path) == 803
    assert interfaces.check_interface("wlan0", require_monitor=False, root=tmp_path) == 1


def test_permission_error_says_which_capability() -> None:
    """Really without the capability: a child process drops to `nobody` before opening."""
    # Import first: the interpreter's own files may not be readable by `nobody`.
    code = "import os\nfrom footfall.edge_agent.interfaces import CaptureError\n"
    code += "from footfall.edge_agent.rawsocket import RawSocketSource\n"
    if os.geteuid() == 0:
        code += "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    code += "try:\n    RawSocketSource('lo', require_monitor=False)\nexcept CaptureError as e:\n    print(e)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "needs CAP_NET_RAW" in out.stdout, out.stderr
    assert "cap_net_raw,cap_net_admin" in out.stdout


# --- channel hopping -------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.mark.parametrize("kind", ["tun", "veth"])
def test_hopper_with_real_iw_on_a_non_wifi_interface(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """The real `iw` binary against real non-Wi-Fi interfaces: it fails, we log once and count."""
    name = request.getfixturevalue("tun_monitor").up().name if kind == "tun" else request.getfixturevalue("veth")[0]
    caplog.set_level(logging.INFO, logger="footfall.edge_agent.channels")
    hopper = ChannelHopper(name, channels=(1, 6, 11), dwell_s=0.02)
    with hopper:
        assert wait_for(lambda: hopper.stats["failures"] >= 3)
    assert not hopper.running
    assert hopper.stats["hops"] == 0 and hopper.current is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not once per attempt
    msg = errors[0].getMessage()
    if shutil.which("iw"):
        assert f"`iw dev {name} set channel 1` failed (exit" in msg
        # Here the kernel has no cfg80211 at all; on a Wi-Fi router the driver refuses a veth instead.
        assert "no Wi-Fi stack (cfg80211)" in msg or "monitor interface of a cfg80211 driver" in msg
    else:
        assert "not found: install iw" in msg
    assert hopper.last_error is not None


def test_hopper_without_iw_binary(caplog: pytest.LogCaptureFixture) -> None:
    hopper = ChannelHopper("lo", dwell_s=0.01, iw="/nonexistent/iw")
    with hopper:
        assert wait_for(lambda: hopper.stats["failures"] >= 3)
    assert "not found: install iw" in (hopper.last_error or "")
    assert sum("not found" in r.getMessage() for r in caplog.records) == 1


def test_hopper_cycles_channels_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    # The success path needs a cfg80211 driver, which this machine lacks; a runner stands in.
    calls: list[list[str]] = []
    fail = threading.Event()
    fail.set()

    def runner(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        rc = 1 if fail.is_set() else 0
        return subprocess.CompletedProcess(argv, rc, "", "command failed: Device or resource busy (-16)" if rc else "")

    caplog.set_level(logging.INFO, logger="footfall.edge_agent.channels")
    hopper = ChannelHopper("mon0", channels=(1, 6, 11), dwell_s=0.01, runner=runner)
    with hopper:
        assert wait_for(lambda: hopper.stats["failures"] >= 2)
        fail.clear()
        assert wait_for(lambda: hopper.stats["hops"] >= 6)
    n = len(calls)
    time.sleep(0.05)
    assert len(calls) == n  # stopped means stopped
    assert all(c[:5] == ["iw", "dev", "mon0", "set", "channel"] for c in calls)
    channels = [int(c[5]) for c in calls]
    assert channels == [(1, 6, 11)[i % 3] for i in range(len(channels))]
    assert "works again" in caplog.text and "Device or resource busy" in caplog.text


def test_hopper_parked_on_one_channel_sets_it_once() -> None:
    calls: list[list[str]] = []
    hopper = ChannelHopper("mon0", channels=[6], dwell_s=0.01, runner=lambda a, **k: calls.append(a))
    with hopper:
        time.sleep(0.1)
    assert calls == [["iw", "dev", "mon0", "set", "channel", "6"]] and hopper.current == 6


def test_hopper_config_errors() -> None:
    with pytest.raises(ChannelError):
        ChannelHopper("mon0", channels=())
    with pytest.raises(ChannelError):
        ChannelHopper("mon0", channels=(0, 6))
    with pytest.raises(ChannelError):
        ChannelHopper("mon0", dwell_s=0)
