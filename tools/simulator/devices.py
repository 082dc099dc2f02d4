"""The simulated radios: which phones randomize, and a Device applying its MAC policy.

A ``Device`` takes its policy (``macs``) scan by scan and burst by burst and keeps every MAC it
used, with when, as the ground truth.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from footfall.tools.simulator.macs import POLICIES, random_la_mac
from footfall.tools.simulator.phones import RANDOMIZABLE_SHARE, PhoneModel

# Policies that draw a fresh random sequence number with every new MAC (the others keep counting).
_RANDOM_SEQ = frozenset(("ios_per_burst", "ios_per_scan", "android_per_scan"))

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
