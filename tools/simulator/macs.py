"""MAC addresses as phones draw them, and the MAC policies by which they change them.

MAC policies (``Device.policy``; truth model 2, see docs/device-estimation.md, "The simulator's
phone behaviour and its sources"). What a randomizing phone does while not associated depends on
its model (``PhoneModel.mac_policy``), as measured in the captures (see ``phones``); no retrievable
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

POLICIES = ("global", "ios_per_burst", "ios_per_scan", "ios_per_scan_seq", "android_per_scan")


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
