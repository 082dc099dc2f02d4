"""Phone models, their probe-request information elements, and MAC randomization.

IE layouts of the iPhones (iOS 15.5 / 16.4.1), the Galaxy S21 Ultra and the Oppo Find X3 Neo
(Android 13) are byte-for-byte the ones in the real captures of the public "Probe Requests Open
Dataset" (Baccichet et al., GiovanniBaccichet/ProbingPatternsDataset, see
/work/shared/data/probe-captures): element order, HT/VHT/HE capabilities, extended capabilities,
vendor elements. The other models (iOS 17, Pixel, Xiaomi, Huawei, legacy Android, printer, POS)
are built the same way from the chipset families they use (Broadcom, Qualcomm, MediaTek,
HiSilicon) and differ in the bytes a fingerprinting step looks at.

MAC policies (``Device.policy``; truth model 2, see docs/device-estimation.md, "The simulator's
phone behaviour and its sources"). What a randomizing phone does while not associated depends on
its model (``PhoneModel.mac_policy``), as measured in the captures above; no retrievable
publication states the granularity (Apple's Platform Security guide only says scans use a
randomized MAC; AOSP says Android 8.0+ randomizes the probe MAC while unassociated):

``global``            the burned-in, globally administered MAC with a real vendor OUI; never changes.
                      Phones that do not randomize (``randomized_share``, default 0.8, has no
                      source) and the Galaxy J5 (Android 8; no source either way), staff, fixed.
``ios_per_burst``     a fresh random locally administered MAC *and* a fresh random 12-bit sequence
                      number for every channel burst (the 1-2 frames sent on one channel): iPhone 11
                      (4 units) and iPhone 12 on iOS 16.4.1 change MAC at 98-100 % of channel
                      transitions, no MAC lives longer than 0.1 s. Used for iPhone 11/12/12 Pro
                      (iOS 16) and, as their closest measured relatives, iPhone 13/15 (iOS 17):
                      no measurement of iOS 17 was found.
``ios_per_scan``      one MAC per scan, random sequence number at each change: iPhone XR (XR-A
                      one MAC per scan, XR-L mostly).
``ios_per_scan_seq``  one MAC per scan, the sequence counter continues across MAC changes: iPhone 7
                      on iOS 15.5 (34 of 34 changes). Used for iPhone 7 (iOS 15) and 6s (iOS 14).
``android_per_scan``  one MAC per scan, random sequence number: Galaxy S21 Ultra and Oppo Find X3
                      Neo (Android 13), 41 of 41 changes with a sequence jump; all randomizing
                      Android phones.

Truth model 1 also drew ``ios_interval`` (a MAC kept 3-15 min, counter kept) and
``android_session`` (a MAC per screen session, counter restarting at 0). Neither had a source
(the captures contradict the first for iOS <= 16; Android's non-persistent randomization is
about connecting, not probing), nothing else constructs them, so they were removed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

BROADCAST = b"\xff" * 6

# OUIs checked against Wireshark's manuf database (IEEE registry).
OUIS: dict[str, tuple[str, ...]] = {
    "apple": ("F0:18:98", "A4:83:E7", "3C:22:FB", "00:F3:9F", "08:6D:41", "04:72:95"),
    "samsung": ("8C:77:12", "00:BF:61", "04:FE:31", "08:FD:0E", "00:24:54", "00:1D:25"),
    "google": ("08:8B:C8", "28:BD:89", "5C:33:7B", "9C:4F:5F", "D4:F5:47", "F8:0F:F9"),
    "xiaomi": ("00:EC:0A", "10:3F:44", "24:11:45", "3C:13:5A", "50:A0:09", "6C:48:3F"),
    "oppo": ("0C:93:8F", "20:64:CB", "34:47:9A", "48:C4:61", "58:C6:F0", "74:EF:4B"),
    "huawei": ("00:E4:06", "04:8C:16", "08:2F:E9", "0C:23:8D", "0C:D6:BD", "00:25:68"),
    "motorola": ("08:AA:55", "38:80:DF", "68:87:1C", "A0:46:5A", "C8:58:95", "E4:90:7E"),
    "hp": ("00:11:85", "00:1C:C4", "10:E7:C6", "20:A6:CD"),
    "ingenico": ("38:EF:E3", "10:1E:DA", "44:D4:7F"),
}


def ie(eid: int, data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = bytes.fromhex(data)
    if len(data) > 255:
        raise ValueError(f"element {eid} too long: {len(data)}")
    return bytes((eid, len(data))) + data


def _wps_tlv(t: int, value: bytes) -> bytes:
    return t.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value


def wps_ie(manufacturer: str, model: str, name: str, uuid: bytes) -> bytes:
    """Microsoft WPS vendor element (00:50:F2 type 4) as sent in a probe request."""
    tlvs = b"".join(
        (
            _wps_tlv(0x104A, b"\x10"),  # version 1.0
            _wps_tlv(0x103A, b"\x00"),  # request type: enrollee, info only
            _wps_tlv(0x1008, b"\x31\x48"),  # config methods
            _wps_tlv(0x1047, uuid),
            _wps_tlv(0x1054, bytes.fromhex("000a0050f2040005")),  # primary device type
            _wps_tlv(0x103C, b"\x03"),  # RF bands 2.4 + 5 GHz
            _wps_tlv(0x1002, b"\x00\x00"),
            _wps_tlv(0x1009, b"\x00\x00"),
            _wps_tlv(0x1012, b"\x00\x00"),
            _wps_tlv(0x1021, manufacturer.encode()),
            _wps_tlv(0x1023, model.encode()),
            _wps_tlv(0x1024, b"1"),
            _wps_tlv(0x1011, name.encode()),
            _wps_tlv(0x1049, bytes.fromhex("00372a000120")),  # WFA vendor extension, version 2.0
        )
    )
    return ie(221, bytes.fromhex("0050f204") + tlvs)


# Elements copied verbatim from the real captures.
RATES_B = "02040b16"  # 1, 2, 5.5, 11 Mbps, none basic
RATES_B_BASIC = "82848b96"  # same, flagged basic
EXT_RATES_G = "0c1218243048606c"
HT_IPHONE = "2d401bff00000000000000000000000000000000000000000000"
HT_IPHONE_OLD = "2d4017ff00000000000000000000000000000000000000000000"
HT_IPHONE12PRO = "2d001bff00000000000000000000000000000000000000000000"
HE_IPHONE = "23010808180080203002000d009f08000000fdfffdff391cc7711c07"
HT_S21 = "2d001bffff000000000000000000000000000000000000000000"
HE_S21 = "23010808180080203002800d019e000c0000f5fff5ff391cc7711c07"
HT_QCOM = "ef0113ffff000000000000000000000000000000000000000100"
VHT_QCOM = "92f19033faff6203faff6203"
HE_QCOM = "2303010002400006304c090d008008020000fafffaff191cc771"
MBO_OCE = "506f9a16030101650101"


@dataclass(frozen=True)
class PhoneModel:
    """A device family: how its probe requests look and how it behaves."""

    name: str
    os: str  # "ios", "android" or "other"
    vendor: str  # key of OUIS
    tx_dbm_offset: float  # relative radiated power: antenna and case differ between models
    rate: int  # radiotap rate, 500 kbps units, as in the real captures
    elements: tuple[bytes | None, ...]  # after the SSID; None marks the DS parameter set
    directed_elements: tuple[bytes | None, ...] | None = None  # when probing a known SSID
    burst: tuple[int, int] = (2, 2)  # probe requests per channel in one scan (min, max)
    directed_share: float = 0.0  # chance that a phone of this model probes remembered SSIDs
    weight: float = 0.0  # market share among visitors/passers-by
    can_randomize: bool = True  # False: always probes with its burned-in MAC
    mac_policy: str = "android_per_scan"  # the policy when this phone randomizes (see above)

    def body(self, channel: int, ssid: bytes = b"") -> bytes:
        elements = self.directed_elements if ssid and self.directed_elements else self.elements
        parts = [ie(0, ssid)]
        for e in elements:
            parts.append(ie(3, bytes((channel,))) if e is None else e)
        return b"".join(parts)


def _model(name: str, os: str, vendor: str, weight: float, elements: list, **kw) -> PhoneModel:
    built = tuple(None if e is None else (ie(*e) if isinstance(e, tuple) else e) for e in elements)
    directed = kw.pop("directed_elements", None)
    if directed is not None:
        directed = tuple(None if e is None else (ie(*e) if isinstance(e, tuple) else e) for e in directed)
    kw.setdefault("tx_dbm_offset", 0.0)
    kw.setdefault("rate", 2)
    return PhoneModel(name, os, vendor, elements=built, directed_elements=directed, weight=weight, **kw)


_UUID_J5 = bytes.fromhex("3b2a8c1e55a2593d9a1e2b0c7f11e8a4")
_UUID_HP = bytes.fromhex("1c852a4d-b800-1f08-abcd-10e7c6a1b2c3".replace("-", ""))
_UUID_POS = bytes.fromhex("6f1e0d2c3b4a59687766554433221100")

MODELS: dict[str, PhoneModel] = {
    m.name: m
    for m in (
        _model(
            "iPhone 15 (iOS 17)",
            "ios",
            "apple",
            0.16,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, HT_IPHONE),
                (127, "0000080400000040000020"),
                (255, HE_IPHONE),
            ],
            tx_dbm_offset=1.0,
            burst=(2, 3),
            mac_policy="ios_per_burst",
        ),
        _model(
            "iPhone 13 (iOS 17)",
            "ios",
            "apple",
            0.10,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, HT_IPHONE),
                (127, "0000080400000040000020"),
                (255, HE_IPHONE),
            ],
            burst=(2, 3),
            mac_policy="ios_per_burst",
        ),
        _model(
            "iPhone 12 (iOS 16)",
            "ios",
            "apple",
            0.07,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, HT_IPHONE),
                (127, "0000080400000040000020"),
                (255, HE_IPHONE),
            ],
            mac_policy="ios_per_burst",
        ),
        _model(
            "iPhone 12 Pro (iOS 16)",
            "ios",
            "apple",
            0.03,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, HT_IPHONE12PRO),
                (127, "0000080000000040000020"),
                (255, HE_IPHONE),
            ],
            mac_policy="ios_per_burst",
        ),
        _model(
            "iPhone 11 (iOS 16)",
            "ios",
            "apple",
            0.06,
            [(1, RATES_B_BASIC), (50, EXT_RATES_G), None, (45, HT_IPHONE), (127, "0000080400000040"), (255, HE_IPHONE)],
            mac_policy="ios_per_burst",
        ),
        _model(
            "iPhone XR (iOS 16)",
            "ios",
            "apple",
            0.03,
            [(1, RATES_B), (50, EXT_RATES_G), None, (45, HT_IPHONE_OLD), (127, "0000080400000040")],
            tx_dbm_offset=-1.0,
            mac_policy="ios_per_scan",
        ),
        _model(
            "iPhone 7 (iOS 15)",
            "ios",
            "apple",
            0.02,
            [
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, HT_IPHONE_OLD),
                (127, "0000088400000040"),
                (107, "0fffffffffffff"),
            ],
            tx_dbm_offset=-2.0,
            mac_policy="ios_per_scan_seq",
        ),
        _model(
            "iPhone 6s (iOS 14)",
            "ios",
            "apple",
            0.01,
            [
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, HT_IPHONE_OLD),
                (127, "0400088400000040"),
                (221, "0017f20a000104000000"),  # Apple vendor element of older iOS
            ],
            tx_dbm_offset=-2.0,
            mac_policy="ios_per_scan_seq",
        ),
        _model(
            "Galaxy S21 Ultra (Android 13)",
            "android",
            "samsung",
            0.08,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, HT_S21),
                (127, "04004880014000400021"),
                (255, "020014"),
                (255, HE_S21),
                (221, "00904c0408bf0c7678910ffaff0000faff0020"),  # Broadcom VHT capabilities
                (221, "0050f208001200"),
                (221, "00101802000010000000"),  # Broadcom
                (221, "506f9a16030102650101"),
            ],
            rate=0x0B,
        ),
        _model(
            "Galaxy S23 (Android 14)",
            "android",
            "samsung",
            0.10,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, HT_S21),
                (127, "0400488201400040002100"),
                (255, "020014"),
                (255, HE_S21),
                (221, "00904c0408bf0c7678910ffaff0000faff0020"),
                (221, "0050f208001200"),
                (221, "00101802000010000000"),
                (221, "506f9a16030102650101"),
            ],
            rate=0x0B,
            tx_dbm_offset=1.0,
        ),
        _model(
            "Galaxy A54 (Android 14)",
            "android",
            "samsung",
            0.08,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, "2d011bffff000000000000000000000000000000000000000000"),
                (127, "04004880014000400021"),
                (255, "23010808180080203002000d009e000c0000f5fff5ff391cc7711c07"),
                (221, "0050f208002600"),
                (221, "506f9a16030101650101"),
            ],
            rate=0x0B,
            directed_share=0.15,
        ),
        _model(
            "Pixel 8 (Android 14)",
            "android",
            "google",
            0.05,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, "2d0063ffff000000000000000000000000000000000000000000"),
                (127, "04004a82014000400021"),
                (255, "23010808180080203002800d019e000c0000fafffaff391cc7711c07"),
                (221, "00904c0408bf0c7678910ffaff0000faff0020"),
                (221, "00101802000010000000"),
                (221, "506f9a16030102650101"),
            ],
            rate=0x02,
            burst=(2, 3),
        ),
        _model(
            "Redmi Note 12 (Android 13)",
            "android",
            "xiaomi",
            0.09,
            [
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, HT_QCOM),
                (191, VHT_QCOM),
                (221, "0050f208002800"),
                (127, "00000a8200400000000120"),
                (255, "020046"),
                (221, MBO_OCE),
                (221, "8cfdf00101020100"),  # Qualcomm
            ],
            rate=0x0B,
            directed_share=0.3,
            burst=(2, 4),
        ),
        _model(
            "Oppo Find X3 Neo (Android 13)",
            "android",
            "oppo",
            0.04,
            [
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, HT_QCOM),
                (191, VHT_QCOM),
                (221, "0050f208002800"),
                (127, "00000a8200400000000120"),
                (255, "020046"),
                (221, MBO_OCE),
                (221, "8cfdf00101020100"),
            ],
            directed_elements=[
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, HT_QCOM),
                (127, "04000a8200400040800120"),
                (191, VHT_QCOM),
                (221, "0050f208002800"),
                (255, HE_QCOM),
                (255, "02002a"),
                (221, MBO_OCE),
            ],
            rate=0x0B,
            directed_share=0.7,
            burst=(3, 4),
        ),
        _model(
            "Huawei P30 (Android 10)",
            "android",
            "huawei",
            0.04,
            [
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, "ef0917ffff000000000000000000000000000000000000000000"),
                (127, "0000088001000040"),
                (191, "b2f1800faaff0000aaff0000"),
                (221, "00e0fc40000000010100"),  # Huawei
                (221, "0050f208002b00"),
            ],
            rate=0x02,
            directed_share=0.4,
            burst=(2, 3),
        ),
        _model(
            "Galaxy J5 (Android 8)",
            "android",
            "samsung",
            0.04,
            [
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, "2c0103ff00000000000000000000000000000000000000000000"),
                (127, "0000000000000040"),
                wps_ie("samsung", "SM-J530F", "Galaxy J5", _UUID_J5),
                (221, "0050f208000600"),
            ],
            rate=0x02,
            tx_dbm_offset=-2.0,
            directed_share=0.6,
            burst=(1, 2),
            # AOSP: Android 8.0+ randomizes probe MACs when the chipset supports it; whether this
            # one does is not documented (no source either way): kept as the global-MAC phone.
            can_randomize=False,
        ),
        _model(
            "Moto G (Android 11)",
            "android",
            "motorola",
            0.03,
            [
                (1, RATES_B),
                (50, EXT_RATES_G),
                None,
                (45, "ad0117ff00000000000000000000000000000000000000000000"),
                (127, "0000000000000040"),
                (221, "000ce7080000000000"),  # MediaTek
            ],
            rate=0x02,
            directed_share=0.3,
            burst=(2, 4),
        ),
        _model(
            "HP OfficeJet printer (Wi-Fi Direct)",
            "other",
            "hp",
            0.0,
            [
                (1, "8c129824b048606c"),  # OFDM only, as P2P devices must
                None,
                (45, "2c0103ff00000000000000000000000000000000000000000000"),
                wps_ie("HP", "OfficeJet Pro 9010", "HP OfficeJet Pro", _UUID_HP),
                (221, "506f9a0902020025000605005858045106"),  # Wi-Fi P2P
            ],
            rate=0x0C,
            burst=(1, 1),
        ),
        _model(
            "Ingenico Move/5000 POS",
            "other",
            "ingenico",
            0.0,
            [
                (1, RATES_B_BASIC),
                (50, EXT_RATES_G),
                None,
                (45, "2c0103ff00000000000000000000000000000000000000000000"),
                wps_ie("Ingenico", "Move/5000", "POS", _UUID_POS),
            ],
            rate=0x02,
            burst=(1, 1),
        ),
    )
}

PHONE_MODELS = tuple(m for m in MODELS.values() if m.weight > 0)
# Share of phones (by market weight) able to randomize: the others always show a global MAC,
# so the rest randomize a little more often and the overall share stays ``randomized_share``.
RANDOMIZABLE_SHARE = sum(m.weight for m in PHONE_MODELS if m.can_randomize) / sum(m.weight for m in PHONE_MODELS)
STAFF_MODELS = tuple(m for m in PHONE_MODELS if m.os in ("ios", "android"))
POLICIES = ("global", "ios_per_burst", "ios_per_scan", "ios_per_scan_seq", "android_per_scan")
# Policies that draw a fresh random sequence number with every new MAC (the others keep counting).
_RANDOM_SEQ = frozenset(("ios_per_burst", "ios_per_scan", "android_per_scan"))
for _m in MODELS.values():
    if _m.mac_policy not in POLICIES[1:]:
        raise ValueError(f"{_m.name}: unknown randomizing MAC policy {_m.mac_policy!r}")

# Synthetic remembered networks for the few phones that still probe SSIDs by name.
KNOWN_SSIDS = (
    "FASTWEB-7F3A21",
    "Vodafone-A4C9",
    "TIM-84123397",
    "WindTre-5G-2A",
    "Home",
    "eduroam",
    "Casa Rossi",
    "iPhone di Marco",
    "Starbucks WiFi",
    "FRITZ!Box 7530 QX",
    "Linkem_B3F1D2",
    "Office-Guest",
    "Hotel Milano",
    "AndroidAP_4421",
)


_BODIES: dict[tuple[str, int, bytes], bytes] = {}


def random_la_mac(rng: random.Random) -> bytes:
    """A random locally administered unicast MAC, as the OSes draw them."""
    b = bytearray(rng.getrandbits(48).to_bytes(6, "big"))
    b[0] = (b[0] & 0xFC) | 0x02
    return bytes(b)


def global_mac(rng: random.Random, vendor: str) -> bytes:
    oui = bytes.fromhex(rng.choice(OUIS[vendor]).replace(":", ""))
    return oui + rng.getrandbits(24).to_bytes(3, "big")


def mac_str(mac: bytes) -> str:
    return mac.hex(":")


def draw_randomized(rng: random.Random, model: PhoneModel, share: float) -> bool:
    """Whether a phone randomizes, such that ``share`` of all phones do (as far as possible)."""
    r = rng.random()
    return model.can_randomize and r < min(1.0, share / RANDOMIZABLE_SHARE)


def pick_policy(rng: random.Random, model: PhoneModel, randomized: bool) -> str:
    """The MAC policy of a phone: ``global`` unless it randomizes, else its model's policy.

    ``rng`` is not drawn from (truth model 2 ties the policy to the model, as in the captures);
    it stays in the signature for callers.
    """
    if not randomized or not model.can_randomize:
        return "global"
    return model.mac_policy


@dataclass
class Device:
    """One radio: its current MAC, sequence counter and the MACs it has used (ground truth)."""

    model: PhoneModel
    policy: str
    rng: random.Random
    base_mac: bytes
    ssids: tuple[bytes, ...] = ()
    mac: bytes = b""
    seq: int = 0
    # [mac, first_ts, last_ts] in use order; a MAC reused across days gets a new entry.
    macs: list[list] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown MAC policy {self.policy!r}")
        self.seq = self.rng.randrange(4096)
        self.mac = self.base_mac if self.policy == "global" else b""

    @property
    def randomized(self) -> bool:
        return self.policy != "global"

    def body(self, channel: int, ssid: bytes) -> bytes:
        key = (self.model.name, channel, ssid)
        b = _BODIES.get(key)
        if b is None:
            b = _BODIES[key] = self.model.body(channel, ssid)
        return b

    def _new_mac(self, t: float, random_seq: bool) -> None:
        self.mac = random_la_mac(self.rng)
        if random_seq:
            self.seq = self.rng.randrange(4096)
        self.macs.append([self.mac, t, t])

    def begin_scan(self, t: float) -> None:
        """Apply the MAC policy at the start of a scan at time ``t``."""
        p = self.policy
        if p == "global":
            if not self.macs:
                self.macs.append([self.mac, t, t])
        elif p != "ios_per_burst":  # one MAC per scan: ios_per_scan, ios_per_scan_seq, android_per_scan
            # ios_per_scan_seq keeps counting across MACs: the tell-tale that links them.
            self._new_mac(t, p in _RANDOM_SEQ)

    def begin_burst(self, t: float) -> None:
        """Start the burst on the next channel of a scan (after ``begin_scan``)."""
        if self.policy == "ios_per_burst":
            self._new_mac(t, True)

    def note_sent(self, t: float) -> None:
        """The last frame with the current MAC so far was sent at ``t``."""
        self.macs[-1][2] = t
