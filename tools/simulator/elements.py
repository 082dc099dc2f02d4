"""Probe-request information elements: the byte builders and the elements the phone models share.

The shared elements are copied verbatim from the real captures (see ``phones``).
"""

from __future__ import annotations


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
