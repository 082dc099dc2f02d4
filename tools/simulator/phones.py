"""Phone models: their probe-request information elements, radio traits and market shares.

IE layouts of the iPhones (iOS 15.5 / 16.4.1), the Galaxy S21 Ultra and the Oppo Find X3 Neo
(Android 13) are byte-for-byte the ones in the real captures of the public "Probe Requests Open
Dataset" (Baccichet et al., GiovanniBaccichet/ProbingPatternsDataset, see
/work/shared/data/probe-captures): element order, HT/VHT/HE capabilities, extended capabilities,
vendor elements. The other models (iOS 17, Pixel, Xiaomi, Huawei, legacy Android, printer, POS)
are built the same way from the chipset families they use (Broadcom, Qualcomm, MediaTek,
HiSilicon) and differ in the bytes a fingerprinting step looks at.
"""

from __future__ import annotations

from dataclasses import dataclass

from footfall.tools.simulator.elements import (
    EXT_RATES_G,
    HE_IPHONE,
    HE_QCOM,
    HE_S21,
    HT_IPHONE,
    HT_IPHONE12PRO,
    HT_IPHONE_OLD,
    HT_QCOM,
    HT_S21,
    MBO_OCE,
    RATES_B,
    RATES_B_BASIC,
    VHT_QCOM,
    ie,
    wps_ie,
)
from footfall.tools.simulator.macs import POLICIES


@dataclass(frozen=True)
class PhoneModel:
    """A device family: how its probe requests look and how it behaves."""

    name: str
    os: str  # "ios", "android" or "other"
    vendor: str  # key of macs.OUIS
    tx_dbm_offset: float  # relative radiated power: antenna and case differ between models
    rate: int  # radiotap rate, 500 kbps units, as in the real captures
    elements: tuple[bytes | None, ...]  # after the SSID; None marks the DS parameter set
    directed_elements: tuple[bytes | None, ...] | None = None  # when probing a known SSID
    burst: tuple[int, int] = (2, 2)  # probe requests per channel in one scan (min, max)
    directed_share: float = 0.0  # chance that a phone of this model probes remembered SSIDs
    weight: float = 0.0  # market share among visitors/passers-by
    can_randomize: bool = True  # False: always probes with its burned-in MAC
    mac_policy: str = "android_per_scan"  # the policy when this phone randomizes (see ``macs``)

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
for _m in MODELS.values():
    if _m.mac_policy not in POLICIES[1:]:
        raise ValueError(f"{_m.name}: unknown randomizing MAC policy {_m.mac_policy!r}")
