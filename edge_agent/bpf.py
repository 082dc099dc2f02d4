"""Classic BPF: the in-kernel probe-request filter and a pure-Python interpreter to check it.

A monitor interface sees every frame on the channel (beacons alone are ~10/s per access point,
data frames far more); the agent only wants probe requests. Filtering in the kernel means the
rest is never copied to user space, which is what keeps a small router's CPU idle.

The interpreter mirrors the kernel's semantics (out-of-bounds loads and division by zero end
the program with 0, i.e. "drop") so tests can run the very program we attach against every
real frame without root.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Instruction = tuple[int, int, int, int]
Program = list[Instruction]

# Instruction classes and fields, as in <linux/filter.h> / <linux/bpf_common.h>.
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00,
    0x10,
    0x20,
    0x30,
    0x40,
    0x50,
    0x60,
    0x70,
    0x80,
    0x90,
    0xA0,
)
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
RVAL_A = 0x10  # BPF_A as a return source
TAX, TXA = 0x00, 0x80

MEMWORDS = 16  # BPF_MEMWORDS: scratch memory slots
MAXINSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer programs
SKF_AD_OFF = -0x1000  # ancillary-data loads start here (as unsigned k: 0xFFFFF000)

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27

# Frame-control byte 0 of a probe request: protocol version 0, type 0 (management), subtype 4.
FC_PROBE_REQUEST = 0x40
RADIOTAP_MIN_LEN = 8  # version, pad, u16 length, u32 present bitmap
DOT11_MGMT_HEADER_LEN = 24
DEFAULT_SNAPLEN = 0xFFFF

# libpcap's spelling of the same filter, for scapy / tcpdump based sources.
PROBE_REQUEST_FILTER = "type mgt subtype probe-req"


class BPFError(ValueError):
    """A program the kernel would refuse (bad jump, missing return, unknown opcode...)."""


def stmt(code: int, k: int = 0) -> Instruction:
    return (code, 0, 0, k & 0xFFFFFFFF)


def jump(code: int, k: int, jt: int, jf: int) -> Instruction:
    return (code, jt, jf, k & 0xFFFFFFFF)


def probe_request_program(snaplen: int = DEFAULT_SNAPLEN) -> Program:
    """Accept radiotap frames carrying an 802.11 probe request; return `snaplen` bytes of them.

    Stricter than libpcap's ``type mgt subtype probe-req`` on purpose:
    * radiotap version must be 0 and its length at least 8, so garbage is not read as a frame;
    * frame-control byte 0 must be exactly 0x40 - libpcap masks out the protocol-version bits,
      but a non-zero version has another header layout the parser cannot read anyway;
    * the 24-byte management header must be complete (the load of its last byte fails on a
      truncated frame, which drops it), so user space never sees a header-less "probe".
    """
    if not 0 < snaplen <= 0xFFFFFFFF:
        raise BPFError(f"snaplen must be in 1..2**32-1, got {snaplen}")
    # Indexes are spelled out so the jump offsets below can be checked by eye.
    prog: Program = [
        stmt(LD | B | ABS, 0),  # 0: radiotap version
        jump(JMP | JEQ | K, 0, 0, 11),  # 1: != 0 -> drop (13)
        # cBPF loads are big-endian; the radiotap length is little-endian, so build it by bytes.
        stmt(LD | B | ABS, 3),  # 2: high byte of it_len
        stmt(ALU | LSH | K, 8),  # 3
        stmt(MISC | TAX),  # 4
        stmt(LD | B | ABS, 2),  # 5: low byte of it_len
        stmt(ALU | OR | X),  # 6: A = it_len
        jump(JMP | JGE | K, RADIOTAP_MIN_LEN, 0, 5),  # 7: < 8 -> drop (13)
        stmt(MISC | TAX),  # 8: X = offset of the 802.11 header
        stmt(LD | B | IND, DOT11_MGMT_HEADER_LEN - 1),  # 9: out of bounds if truncated -> drop
        stmt(LD | B | IND, 0),  # 10: frame control byte 0
        jump(JMP | JEQ | K, FC_PROBE_REQUEST, 0, 1),  # 11: probe request?
        stmt(RET | K, snaplen),  # 12: accept
        stmt(RET | K, 0),  # 13: drop
    ]
    # Jump offsets count from the next instruction; both early exits must land on the drop.
    drop = len(prog) - 1
    assert 2 + prog[1][2] == drop and 8 + prog[7][2] == drop and 12 + prog[11][2] == drop
    return prog


def accept_all_program(snaplen: int = DEFAULT_SNAPLEN) -> Program:
    return [stmt(RET | K, snaplen)]


def reject_all_program() -> Program:
    return [stmt(RET | K, 0)]


def validate(program: Sequence[Instruction]) -> None:
    """Refuse what the kernel's sk_chk_filter refuses, with a readable reason."""
    n = len(program)
    if n == 0 or n > MAXINSNS:
        raise BPFError(f"program length {n} not in 1..{MAXINSNS}")
    for pc, insn in enumerate(program):
        if len(insn) != 4:
            raise BPFError(f"insn {pc}: expected (code, jt, jf, k), got {insn!r}")
        code, jt, jf, k = insn
        if not (0 <= code <= 0xFFFF and 0 <= jt <= 0xFF and 0 <= jf <= 0xFF and 0 <= k <= 0xFFFFFFFF):
            raise BPFError(f"insn {pc}: field out of range in {insn!r}")
        cls = code & 0x07
        if cls == JMP:
            op = code & 0xF0
            if op == JA:
                if pc + 1 + k >= n:
                    raise BPFError(f"insn {pc}: ja +{k} jumps past the end")
            elif op in (JEQ, JGT, JGE, JSET):
                if pc + 1 + max(jt, jf) >= n:
                    raise BPFError(f"insn {pc}: conditional jump past the end")
            else:
                raise BPFError(f"insn {pc}: unknown jump op {code:#x}")
        elif cls in (ST, STX) or (cls in (LD, LDX) and code & 0xE0 == MEM):
            if k >= MEMWORDS:
                raise BPFError(f"insn {pc}: scratch slot {k} >= {MEMWORDS}")
        elif cls == ALU and code & 0xF0 in (DIV, MOD) and code & 0x08 == K and k == 0:
            raise BPFError(f"insn {pc}: division by constant zero")
        if cls in (LD, LDX) and code & 0xE0 in (ABS, IND) and k >= (SKF_AD_OFF & 0xFFFFFFFF):
            raise BPFError(f"insn {pc}: ancillary loads (k={k:#x}) are not supported")
    if program[-1][0] & 0x07 != RET:
        raise BPFError("program must end with a return")


def _load(packet: bytes, offset: int, size: int) -> int | None:
    if offset < 0 or offset + size > len(packet):
        return None
    return int.from_bytes(packet[offset : offset + size], "big")


_SIZES = {W: 4, H: 2, B: 1}


def run(program: Sequence[Instruction], packet: bytes) -> int:
    """Execute `program` on `packet` as the kernel would; return the accepted length (0 = drop).

    The return value is what the kernel uses as the snap length: the socket gets
    min(returned, len(packet)) bytes.
    """
    validate(program)
    return _execute(program, packet)


def compile_program(program: Sequence[Instruction]) -> Callable[[bytes], int]:
    """Validate once, then run many packets (`run()` re-validates on every call)."""
    frozen = tuple(program)
    validate(frozen)
    return lambda packet: _execute(frozen, packet)


def _execute(program: Sequence[Instruction], packet: bytes) -> int:
    a = x = 0
    mem = [0] * MEMWORDS
    plen = len(packet)
    pc = 0
    mask = 0xFFFFFFFF
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if cls in (LD, LDX):
            mode = code & 0xE0
            if mode == IMM:
                val = k
            elif mode == LEN:
                val = plen
            elif mode == MEM:
                val = mem[k]
            elif cls == LD and mode in (ABS, IND):
                off = k if mode == ABS else (x + k) & mask
                loaded = _load(packet, off, _SIZES[code & 0x18])
                if loaded is None:
                    return 0  # out-of-bounds loads end the program with "drop"
                val = loaded
            elif cls == LDX and mode == MSH:
                byte = _load(packet, k, 1)
                if byte is None:
                    return 0
                val = (byte & 0x0F) * 4
            else:
                raise BPFError(f"insn {pc - 1}: unsupported load {code:#x}")
            if cls == LD:
                a = val
            else:
                x = val
        elif cls == ST:
            mem[k] = a
        elif cls == STX:
            mem[k] = x
        elif cls == ALU:
            op = code & 0xF0
            src = x if code & 0x08 else k
            if op == ADD:
                a = (a + src) & mask
            elif op == SUB:
                a = (a - src) & mask
            elif op == MUL:
                a = (a * src) & mask
            elif op == DIV:
                if src == 0:
                    return 0
                a = a // src
            elif op == MOD:
                if src == 0:
                    return 0
                a = a % src
            elif op == OR:
                a |= src
            elif op == AND:
                a &= src
            elif op == XOR:
                a ^= src
            elif op == LSH:
                a = (a << (src & 31)) & mask if src < 32 else 0
            elif op == RSH:
                a = a >> src if src < 32 else 0
            elif op == NEG:
                a = (-a) & mask
            else:
                raise BPFError(f"insn {pc - 1}: unknown alu op {code:#x}")
        elif cls == JMP:
            op = code & 0xF0
            if op == JA:
                pc += k
                continue
            src = x if code & 0x08 else k
            if op == JEQ:
                taken = a == src
            elif op == JGT:
                taken = a > src
            elif op == JGE:
                taken = a >= src
            else:  # JSET; validate() refused anything else
                taken = bool(a & src)
            pc += jt if taken else jf
        elif cls == RET:
            rval = code & 0x18
            if rval == K:
                return k
            if rval == RVAL_A:
                return a
            raise BPFError(f"insn {pc - 1}: unsupported return {code:#x}")
        else:  # MISC
            if code & 0xF8 == TXA:
                a = x
            elif code & 0xF8 == TAX:
                x = a
            else:
                raise BPFError(f"insn {pc - 1}: unknown misc op {code:#x}")


def accepts(program: Sequence[Instruction], packet: bytes) -> bool:
    return run(program, packet) > 0


@dataclass(frozen=True)
class PackedFilter:
    """`struct sock_fprog` for SO_ATTACH_FILTER, plus the instruction array it points to.

    The kernel copies the instructions during setsockopt(), so this object only has to
    outlive that call; holding `insns` here is what keeps the pointer in `fprog` valid.
    """

    fprog: bytes
    insns: ctypes.Array
    length: int


def pack_insns(program: Sequence[Instruction], check: bool = True) -> bytes:
    """The `struct sock_filter[]` array: u16 code, u8 jt, u8 jf, u32 k in host byte order.

    `check=False` skips `validate()` - only to let tests hand the kernel a bad program.
    """
    if check:
        validate(program)
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def pack(program: Sequence[Instruction], check: bool = True) -> PackedFilter:
    raw = pack_insns(program, check)
    buf = ctypes.create_string_buffer(raw, len(raw))
    # Native alignment puts the pointer at offset 8 on 64-bit, as the C struct does.
    fprog = struct.pack("HP", len(program), ctypes.addressof(buf))
    return PackedFilter(fprog=fprog, insns=buf, length=len(program))


def attach(sock: socket.socket, program: Sequence[Instruction], check: bool = True) -> None:
    """Attach `program` to `sock` (replacing any previous filter); any socket type accepts one."""
    packed = pack(program, check)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, packed.fprog)


def disassemble(program: Sequence[Instruction]) -> str:
    """One line per instruction, in the `tcpdump -dd` shape, for logs and failing tests."""
    return "\n".join(f"{{ 0x{c:02x}, {jt}, {jf}, 0x{k:08x} }}," for c, jt, jf, k in program)
