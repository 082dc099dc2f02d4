"""What the device linker (``hub/derandomize.py``) is tuned by, and what it counts.

Every value's reason is beside it; the module doc of ``derandomize`` explains the model they
parametrize. Chosen on the simulator's tuning seeds and the real captures' recorded clock
(docs/device-estimation.md says which on which).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from footfall.hub.sweeps import SweepSettings

__all__ = ["LinkSettings", "LinkStats"]


@dataclass
class LinkSettings(SweepSettings):
    max_gap_s: float = 900.0  # longest silence a track survives: an idle phone scans every 1.5-5 min
    gap_tau_s: float = 20.0  # f(dt) ~ (1 + dt / tau) ** -1 / tau: scans seconds to minutes apart
    stay_d0_s: float = 30.0  # inside: S(dt) = D / (D + dt), D = time heard so far + d0 (Lindy)
    outside_stay_s: float = 40.0  # a passer-by stays in range exp(-dt / this): walking past
    rssi_sigma_db: float = 4.0  # a phone's scan-to-scan RSSI change: Laplace with this scale ...
    rssi_outlier: float = 0.05  # ... plus this share of jumps (out of a pocket, behind a shelf)
    rssi_span_db: float = 60.0  # a new device's RSSI: uniform over this range
    rssi_ema: float = 0.3  # weight of the newest sweep in a track's running RSSI (as the link model's fit)
    birth_window_s: float = 1800.0
    prior_births_per_h: float = 2.0  # per fingerprint, before the tracker has seen any
    sweeps_per_passerby: float = 1.15  # scans a passer-by's phone is heard in (simulator tuning seeds)
    cross_fp_cost: float = 3.0
    cross_fp_max_gap_s: float = 120.0
    seq_window: int = 64
    seq_max_gap_s: float = 300.0
    seq_bonus: float = 5.0
    ssid_bonus: float = 5.0
    ssid_mismatch: float = 2.0
    bias: float = 0.0  # added to every continuation cost: > 0 splits more, < 0 merges more
    # The same with a site's measured link model (chosen on the simulator's tuning seeds: the
    # measured gap density alone makes the tracker split visits 2x too often).
    measured_bias: float = -3.0
    # The device keys a store keeps (visits, segments, O2O) come from a second pass that joins
    # only what the evidence carries (no bias): a key should be one person, and a wrong join
    # gives one person another's visits. Chosen on the tuning seeds: V-measure 0.773 against
    # 0.757 with the estimation bias (naive 0.733); the figures of people keep the first pass
    # and correct its joins (hub/estimate.py), passers-by are counted on this one.
    identity_bias: float = 0.0
    sweeps_per_visitor: float = 12.0  # without a measured link model: scans a phone inside makes per visit
    ambiguity_margin: float = 0.5
    # Tracks of one fingerprint looked at per sweep, latest heard first (a mall's crowd of one
    # model must not make linking quadratic); SSID matches are looked up on top.
    max_candidates: int = 64
    # How long a MAC's key is remembered after it was last heard (bounded memory on a hub that
    # runs for months; a random MAC does not come back).
    mac_memory_s: float = 2 * 86400.0
    # Off only for data whose MACs were rewritten without keeping the locally administered bit
    # (the anonymized public captures).
    trust_la_bit: bool = True
    # A track heard for ``rekey_after_s`` whose best continuation has a posterior below
    # ``rekey_below`` goes on under a new key (0: never; see "Where in doubt" in the module doc).
    # The identity pass uses ``identity_rekey_below``; the estimation pass joins, and corrects.
    rekey_below: float = 0.0
    identity_rekey_below: float = 0.7
    rekey_after_s: float = 1800.0

    def identity(self) -> LinkSettings:
        """These settings as the identity pass uses them (its bias and its re-keying)."""
        return replace(self, measured_bias=self.identity_bias, rekey_below=self.identity_rekey_below)


@dataclass
class LinkStats:
    nodes: int = 0
    stable: int = 0
    sweeps: int = 0
    links: int = 0
    seq_links: int = 0
    ssid_links: int = 0
    cross_fp_links: int = 0
    ambiguous: int = 0
    new_devices: int = 0
    rekeys: int = 0  # new keys given to a long track in doubt (counted in new_devices too)

    @property
    def confidence(self) -> float:
        """Share of randomized sweeps whose device was decided without a close runner-up."""
        decided = self.links + self.new_devices
        return 1.0 if decided == 0 else round(1.0 - self.ambiguous / decided, 3)
