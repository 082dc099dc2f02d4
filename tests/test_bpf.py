"""The probe-request BPF program, in the Python interpreter and in the real kernel.

The kernel runs checked here without root: an AF_UNIX datagram socket takes SO_ATTACH_FILTER
too and runs it on the datagram's bytes, so the exact program the agent attaches to its packet
socket is executed by the kernel over every real frame and every crafted non-probe frame.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from footfall.edge_agent import bpf
from footfall.edge_agent.bpf import (
    ABS,
    ADD,
    ALU,
    AND,
    DIV,
    IMM,
    IND,
    JA,
    JEQ,
    JGE,
    JGT,
    JMP,
    JSET,
    LD,
    LDX,
    LEN,
    LSH,
    MEM,
    MISC,
    MOD,
    MSH,
    MUL,
    NEG,
    OR,
    RET,
    RSH,
    RVAL_A,
    ST,
    STX,
    SUB,
    TAX,
    TXA,
    XOR,
    B,
    H,
    K,
    W,
    X,
    jump,
    stmt,
)


def read_pcap(path: Path) -> Iterator[bytes]:
    """Frames of a classic little-endian pcap (what the shared captures are); test-local on purpose."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", f"{path} is not a little-endian pcap"
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        yield data[off + 16 : off + 16 + incl]
        off += 16 + incl


def rt_len(frame: bytes) -> int:
    return frame[2] | frame[3] << 8


def with_fc(frame: bytes, fc0: int) -> bytes:
    out = bytearray(frame)
    out[rt_len(frame)] = fc0
    return bytes(out)


# Frame-control byte 0 of frames a monitor interface sees all the time, and that must not pass.
NON_PROBE_FC = {
    "beacon": 0x80,
    "probe-response": 0x50,
    "assoc-request": 0x00,
    "auth": 0xB0,
    "action": 0xD0,
    "data": 0x08,
    "qos-data": 0x88,
    "null-data": 0x48,
    "ack": 0xD4,
    "rts": 0xB4,
    "probe-request-protocol-v1": 0x41,
}


def non_probe_variants(frame: bytes) -> dict[str, bytes]:
    """Frames derived from a real probe request that the filter must drop."""
    hdr = rt_len(frame)
    out = {name: with_fc(frame, fc) for name, fc in NON_PROBE_FC.items()}
    out["truncated-header"] = frame[: hdr + 23]
    out["radiotap-only"] = frame[:hdr]
    bad_version = bytearray(frame)
    bad_version[0] = 1
    out["radiotap-version-1"] = bytes(bad_version)
    too_short = bytearray(frame)
    too_short[2:4] = (7).to_bytes(2, "little")
    too_short[7] = 0x40  # would be read as a probe request if it_len < 8 were trusted
    out["radiotap-len-7"] = bytes(too_short)
    beyond = bytearray(frame)
    beyond[2:4] = (len(frame) + 10).to_bytes(2, "little")
    out["radiotap-len-past-end"] = bytes(beyond)
    return out


GARBAGE = [b"", b"\x00", b"\x00\x00\x08", b"\x00\x00\x08\x00\x00\x00\x00\x00", b"\xff" * 64, bytes(range(40))]


def reference_accepts(pkt: bytes) -> bool:
    """The filter's contract, written plainly."""
    if len(pkt) < 4 or pkt[0] != 0:
        return False
    hdr = rt_len(pkt)
    return hdr >= 8 and len(pkt) >= hdr + 24 and pkt[hdr] == 0x40


@pytest.fixture(scope="module")
def real_frames(captures: list[Path]) -> list[bytes]:
    frames = [f for path in captures for f in read_pcap(path)]
    assert len(frames) > 1000
    return frames


def scapy_frames() -> dict[str, bytes]:
    """Well-formed frames built by scapy, with a longer radiotap header than the captures have."""
    dot11 = pytest.importorskip("scapy.layers.dot11")
    rt = dot11.RadioTap(present="Flags+Rate+Channel+dBm_AntSignal+Antenna", Rate=2, ChannelFrequency=2437)
    sta, ap, bcast = "02:00:00:00:00:01", "02:00:00:00:00:aa", "ff:ff:ff:ff:ff:ff"
    ssid = dot11.Dot11Elt(ID="SSID", info=b"shop")
    return {
        "probe-request": bytes(rt / dot11.Dot11(type=0, subtype=4, addr1=bcast, addr2=sta, addr3=bcast) / ssid),
        "probe-request-wildcard": bytes(
            rt / dot11.Dot11(type=0, subtype=4, addr1=bcast, addr2=sta, addr3=bcast) / dot11.Dot11Elt(ID="SSID")
        ),
        "beacon": bytes(
            rt / dot11.Dot11(type=0, subtype=8, addr1=bcast, addr2=ap, addr3=ap) / dot11.Dot11Beacon() / ssid
        ),
        "probe-response": bytes(
            rt / dot11.Dot11(type=0, subtype=5, addr1=sta, addr2=ap, addr3=ap) / dot11.Dot11ProbeResp() / ssid
        ),
        "data": bytes(rt / dot11.Dot11(type=2, subtype=0, addr1=ap, addr2=sta, addr3=ap) / b"payload"),
    }


# --- the probe-request program in the interpreter ------------------------------------------


def test_every_real_frame_is_accepted_with_snaplen(real_frames: list[bytes]) -> None:
    run = bpf.compile_program(bpf.probe_request_program(snaplen=2048))
    results = [run(f) for f in real_frames]
    assert results == [2048] * len(real_frames)


def test_non_probe_variants_of_every_real_frame_are_dropped(real_frames: list[bytes]) -> None:
    run = bpf.compile_program(bpf.probe_request_program())
    accepted = [(i, name) for i, f in enumerate(real_frames) for name, v in non_probe_variants(f).items() if run(v)]
    assert accepted == []


def test_retry_and_power_flags_do_not_matter(real_frames: list[bytes]) -> None:
    # Byte 1 of frame control carries retry / power-management / more-data flags.
    prog = bpf.probe_request_program()
    for f in real_frames[:200]:
        flagged = bytearray(f)
        flagged[rt_len(f) + 1] |= 0x08 | 0x10
        assert bpf.accepts(prog, bytes(flagged))


def test_scapy_built_frames() -> None:
    prog = bpf.probe_request_program()
    decided = {name: bpf.accepts(prog, f) for name, f in scapy_frames().items()}
    assert decided == {
        "probe-request": True,
        "probe-request-wildcard": True,
        "beacon": False,
        "probe-response": False,
        "data": False,
    }


def test_garbage_is_dropped() -> None:
    prog = bpf.probe_request_program()
    assert [bpf.run(prog, g) for g in GARBAGE] == [0] * len(GARBAGE)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_matches_reference_on_arbitrary_bytes(pkt: bytes) -> None:
    assert bpf.accepts(bpf.probe_request_program(), pkt) == reference_accepts(pkt)


@settings(max_examples=400, deadline=None)
@given(
    hdr=st.integers(0, 40),
    fc=st.sampled_from([0x40, 0x41, 0x50, 0x80, 0x08, 0xD4, 0x00]),
    body=st.binary(max_size=60),
    version=st.sampled_from([0, 0, 0, 1]),
)
def test_matches_reference_on_radiotap_shaped_input(hdr: int, fc: int, body: bytes, version: int) -> None:
    # Random bytes rarely look like radiotap; build the prefix so the interesting paths run.
    pkt = bytes([version, 0]) + hdr.to_bytes(2, "little") + bytes(max(hdr - 4, 0)) + bytes([fc]) + body
    assert bpf.accepts(bpf.probe_request_program(), pkt) == reference_accepts(pkt)


def test_libpcap_agrees_on_wellformed_frames(real_frames: list[bytes]) -> None:
    """Cross-check against libpcap's own `type mgt subtype probe-req` (via scapy)."""
    common = pytest.importorskip("scapy.arch.common")
    try:
        compiled = common.compile_filter(bpf.PROBE_REQUEST_FILTER, linktype=127)
    except (ImportError, OSError) as exc:
        pytest.skip(f"libpcap not available to compile the reference filter: {exc}")
    libpcap = [
        tuple(getattr(compiled.bf_insns[i], f) for f in ("code", "jt", "jf", "k")) for i in range(compiled.bf_len)
    ]
    ours = bpf.probe_request_program()
    # Where the two are meant to agree: well-formed radiotap + complete 802.11 headers, PV 0.
    # (libpcap masks the protocol-version bits and does not check radiotap sanity; we do, on purpose.)
    agreeing = list(real_frames)
    for f in real_frames[::50]:
        agreeing += [with_fc(f, fc) for name, fc in NON_PROBE_FC.items() if name != "probe-request-protocol-v1"]
    agreeing += list(scapy_frames().values())
    run_ours, run_libpcap = bpf.compile_program(ours), bpf.compile_program(libpcap)
    mismatches = [f.hex() for f in agreeing if bool(run_ours(f)) != bool(run_libpcap(f))]
    assert mismatches == []
    # And the documented differences are real differences.
    pv1 = with_fc(real_frames[0], 0x41)
    assert bpf.accepts(libpcap, pv1) and not bpf.accepts(ours, pv1)


# --- the same program run by the kernel ------------------------------------------------------


def kernel_filtered(program: bpf.Program, frames: list[bytes]) -> list[bytes | None]:
    """Send each frame through an AF_UNIX datagram pair with `program` attached to the receiver.

    The kernel drops a datagram the filter rejects without telling the sender, and trims an
    accepted one to the returned length; one frame at a time so the queue never fills.
    """
    tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with tx, rx:
        bpf.attach(rx, program)
        out: list[bytes | None] = []
        for f in frames:
            tx.send(f)
            try:
                out.append(rx.recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                out.append(None)
        return out


def test_kernel_runs_the_program_like_the_interpreter(real_frames: list[bytes]) -> None:
    prog = bpf.probe_request_program(snaplen=4096)
    negatives = [v for f in real_frames[::10] for v in non_probe_variants(f).values()]
    frames = real_frames + negatives + list(scapy_frames().values()) + [g for g in GARBAGE if g]
    got = kernel_filtered(prog, frames)
    run = bpf.compile_program(prog)
    expected = [f[: run(f)] if run(f) else None for f in frames]
    assert got == expected
    assert sum(g is not None for g in got) == len(real_frames) + 2  # + the two scapy probe requests


def test_kernel_truncates_to_snaplen(real_frames: list[bytes]) -> None:
    got = kernel_filtered(bpf.probe_request_program(snaplen=40), real_frames[:50])
    assert got == [f[:40] for f in real_frames[:50]]


def test_kernel_refuses_what_validate_refuses() -> None:
    bad = [
        [jump(JMP | JEQ | K, 0, 0, 5), stmt(RET | K, 1)],  # jump past the end
        [stmt(LD | W | ABS, 0)],  # no return
        [stmt(ST, 16), stmt(RET | K, 0)],  # scratch slot out of range
        [stmt(ALU | DIV | K, 0), stmt(RET | K, 0)],  # constant division by zero
    ]
    tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with tx, rx:
        for program in bad:
            with pytest.raises(bpf.BPFError):
                bpf.validate(program)
            with pytest.raises(OSError):
                bpf.attach(rx, program, check=False)


def test_pack_layout() -> None:
    prog = bpf.probe_request_program()
    packed = bpf.pack(prog)
    length, addr = struct.unpack("HP", packed.fprog)
    assert length == len(prog) == packed.length
    assert ctypes.string_at(addr, 8 * length) == bpf.pack_insns(prog)
    assert bpf.pack_insns([(0x06, 1, 2, 0x01020304)]) == struct.pack("=HBBI", 6, 1, 2, 0x01020304)


# --- the interpreter beyond the probe program ------------------------------------------------


@pytest.mark.parametrize(
    ("op", "a", "k", "expected"),
    [
        (ADD, 0xFFFFFFFF, 2, 1),
        (SUB, 1, 2, 0xFFFFFFFF),
        (MUL, 0x10000, 0x10000, 0),
        (DIV, 7, 2, 3),
        (MOD, 7, 4, 3),
        (OR, 0xF0, 0x0F, 0xFF),
        (AND, 0xF0, 0x3C, 0x30),
        (XOR, 0xFF, 0x0F, 0xF0),
        (LSH, 1, 31, 0x80000000),
        (RSH, 0x80000000, 31, 1),
    ],
)
def test_alu_wraps_like_u32(op: int, a: int, k: int, expected: int) -> None:
    with_k = [stmt(LD | IMM, a), stmt(ALU | op | K, k), stmt(RET | RVAL_A)]
    with_x = [stmt(LDX | IMM, k), stmt(LD | IMM, a), stmt(ALU | op | X), stmt(RET | RVAL_A)]
    assert bpf.run(with_k, b"") == expected
    assert bpf.run(with_x, b"") == expected


def test_neg_mem_len_msh_and_jumps() -> None:
    pkt = bytes([0x45, 0x00, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF])
    assert bpf.run([stmt(LD | IMM, 1), stmt(ALU | NEG), stmt(RET | RVAL_A)], b"") == 0xFFFFFFFF
    assert bpf.run([stmt(LD | W | LEN), stmt(RET | RVAL_A)], pkt) == 8
    assert bpf.run([stmt(LD | H | ABS, 2), stmt(RET | RVAL_A)], pkt) == 0x1234  # big-endian, as in the kernel
    assert bpf.run([stmt(LD | W | ABS, 4), stmt(RET | RVAL_A)], pkt) == 0xDEADBEEF
    assert bpf.run([stmt(LDX | B | MSH, 0), stmt(MISC | TXA), stmt(RET | RVAL_A)], pkt) == 20  # IPv4 IHL*4
    mem = [stmt(LD | IMM, 7), stmt(ST, 3), stmt(LDX | MEM, 3), stmt(LD | IMM, 0), stmt(STX, 15)]
    mem += [stmt(LD | MEM, 15), stmt(RET | RVAL_A)]
    assert bpf.run(mem, b"") == 7
    assert bpf.run([stmt(LD | IMM, 5), stmt(MISC | TAX), stmt(LD | B | IND, 0), stmt(RET | RVAL_A)], pkt) == 0xAD
    ja = [jump(JMP | JA, 1, 0, 0), stmt(RET | K, 1), stmt(RET | K, 2)]
    assert bpf.run(ja, b"") == 2
    for code, a, k, taken in [(JGT, 5, 4, True), (JGT, 4, 4, False), (JGE, 4, 4, True), (JSET, 6, 2, True)]:
        prog = [stmt(LD | IMM, a), jump(JMP | code | K, k, 0, 1), stmt(RET | K, 1), stmt(RET | K, 2)]
        assert bpf.run(prog, b"") == (1 if taken else 2), (code, a, k)


def test_out_of_bounds_and_division_by_zero_drop() -> None:
    assert bpf.run([stmt(LD | W | ABS, 6), stmt(RET | K, 9)], b"\x00" * 9) == 0
    assert bpf.run([stmt(LD | IMM, 3), stmt(MISC | TAX), stmt(LD | H | IND, 6), stmt(RET | K, 9)], bytes(9)) == 0
    assert bpf.run([stmt(LDX | B | MSH, 4), stmt(RET | K, 9)], b"\x00") == 0
    zero_x = [stmt(LDX | IMM, 0), stmt(LD | IMM, 4), stmt(ALU | DIV | X), stmt(RET | K, 9)]
    assert bpf.run(zero_x, b"") == 0


def test_validate_reasons() -> None:
    with pytest.raises(bpf.BPFError, match="length"):
        bpf.validate([])
    with pytest.raises(bpf.BPFError, match="ancillary"):
        bpf.validate([stmt(LD | W | ABS, bpf.SKF_AD_OFF), stmt(RET | K, 0)])
    with pytest.raises(bpf.BPFError, match="unknown jump"):
        bpf.validate([jump(JMP | 0x50 | K, 0, 0, 0), stmt(RET | K, 0)])
    with pytest.raises(bpf.BPFError, match="snaplen"):
        bpf.probe_request_program(snaplen=0)
    assert "{ 0x15, 0, 1, 0x00000040 }," in bpf.disassemble(bpf.probe_request_program())
