"""Turn a raw MAC address into the only identities that leave the parsing step.

- ``device``: HMAC-SHA256 of the MAC under the site's secret key (or a chain-wide key so
  that one device is one id in every store), truncated to 128 bits, hex. Without the key
  nobody can test a guessed MAC against it; the 2^48 MAC space (2^24 per vendor prefix)
  makes an unkeyed hash trivially reversible, which is why we never use one as the id.
- ``partner_hash``: MD5 of the MAC written in the partner's normal form, the way telecom
  partners index their subscriber databases (seed 004). Computed only when partner matching
  is enabled, and only for globally administered MACs: a randomized MAC is in nobody's
  database, and hashing it would only leak more than needed.
- ``randomized``: the locally administered bit (0x02 of the first octet). Modern phones set
  it on the random addresses they probe from.

The raw MAC is never stored here: a small bounded cache maps MAC bytes to the computed
identity so the hot path does not run HMAC per frame; it lives only in memory.
"""

from __future__ import annotations

import hashlib
import secrets

try:  # CPython's own SHA-256: no OpenSSL call overhead, which dominates for 6-byte inputs
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - other interpreters
    _sha256 = hashlib.sha256
from collections.abc import Callable, Iterable
from pathlib import Path

from footfall.schema import OPTOUT_PREFIX_BYTES

# Partner normal forms: how a partner writes a MAC before hashing it with MD5.
MAC_FORMATS = {
    "colon-upper": ("{:02X}", ":"),  # AA:BB:CC:DD:EE:FF
    "colon-lower": ("{:02x}", ":"),  # aa:bb:cc:dd:ee:ff
    "dash-upper": ("{:02X}", "-"),  # AA-BB-CC-DD-EE-FF
    "dash-lower": ("{:02x}", "-"),
    "plain-upper": ("{:02X}", ""),  # AABBCCDDEEFF
    "plain-lower": ("{:02x}", ""),
}
# Small on purpose: a probe burst hits it; a sensor tracking 50,000 devices must not hold
# 50,000 cache entries as well (memory budget of an OpenWrt router).
CACHE_LIMIT = 1024
# SSIDs are at most 32 octets: 4,096 of them and their hashes stay under 1 MB.
SSID_CACHE_LIMIT = 4096
KEY_BYTES = 32
DEVICE_ID_BYTES = 16


def is_device_id(text: str) -> bool:
    """A device id as payloads and the hub's opt-out lists carry it: 32 lowercase hex digits.

    What a sensor may keep on disk; a raw MAC (12 hex digits in any spelling) never passes.
    """
    return len(text) == 2 * DEVICE_ID_BYTES and all(c in "0123456789abcdef" for c in text)


def is_randomized(mac: bytes) -> bool:
    return bool(mac[0] & 0x02)


def format_mac(mac: bytes, style: str = "colon-lower") -> str:
    try:
        fmt, sep = MAC_FORMATS[style]
    except KeyError:
        raise ValueError(f"unknown MAC format {style!r}; choose one of {sorted(MAC_FORMATS)}") from None
    return sep.join(fmt.format(b) for b in mac)


def parse_mac(text: str) -> bytes:
    """Accept AA:BB:.., aa-bb-.., aabb.ccdd.eeff or aabbccddeeff; raise ValueError otherwise."""
    digits = "".join(ch for ch in text.strip() if ch not in ":-. ")
    if len(digits) != 12:
        raise ValueError("a MAC address has 12 hex digits")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError("a MAC address has 12 hex digits") from None


def partner_hash(mac: bytes, style: str = "colon-upper") -> str:
    return hashlib.md5(format_mac(mac, style).encode()).hexdigest()


def load_key(path: str | Path, *, create: bool = False) -> bytes:
    """Read the site's hashing secret; with ``create``, make one (0600) if absent."""
    p = Path(path)
    if not p.exists():
        if not create:
            raise FileNotFoundError(f"hash key file {p} does not exist (footfall provision writes one)")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(mode=0o600)
        p.write_text(secrets.token_hex(KEY_BYTES) + "\n")
    text = p.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"hash key file {p} must hold hex digits") from None
    if len(key) < 16:
        raise ValueError(f"hash key in {p} is too short: at least 16 bytes (32 hex digits)")
    return key


class Identifier:
    """Keyed hashing of MACs with an opt-out list; one per agent (one key, one site)."""

    __slots__ = (
        "_key",
        "_cache",
        "_ssids",
        "_inner",
        "_outer",
        "partner_format",
        "optout",
        "optout_prefixes",
        "optout_hits",
    )

    def __init__(
        self,
        key: bytes,
        *,
        partner_format: str | None = None,
        optout: Iterable[str] = (),
    ) -> None:
        if len(key) < 16:
            raise ValueError("hash key must be at least 16 bytes")
        if partner_format is not None and partner_format not in MAC_FORMATS:
            raise ValueError(f"unknown partner MAC format {partner_format!r}")
        self._key = key
        # HMAC (RFC 2104) with the padded-key states computed once: the per-MAC cost is two
        # small hash updates instead of a full HMAC set-up, a third of the time on the hot path.
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = _sha256(bytes(b ^ 0x36 for b in block))
        self._outer = _sha256(bytes(b ^ 0x5C for b in block))
        self._cache: dict[bytes, tuple[bytes, bool, str | None] | None] = {}
        self._ssids: dict[bytes, str] = {}
        self.partner_format = partner_format
        self.optout: frozenset[str] = frozenset(optout)
        # First 8 bytes of device digests (the hub's compact list, see schema.pack_optout_prefixes).
        self.optout_prefixes: frozenset[bytes] = frozenset()
        self.optout_hits = 0

    @property
    def known(self) -> Callable[[bytes], tuple[bytes, bool, str | None] | None]:
        """The lookup of the identities computed lately: ``known(mac)`` is what
        :meth:`identify` returns for ``mac``, or None when it has to be asked (not computed
        lately, or opted out: identify counts the hit). The agent's loop asks it first, which
        spares a call for most frames."""
        return self._cache.get

    @property
    def ssid_hashes(self) -> Callable[[bytes], str | None]:
        """The lookup of the SSID hashes computed lately: :meth:`ssid_hash`, or None."""
        return self._ssids.get

    def device_id(self, mac: bytes) -> str:
        """The device id as it appears in payloads: 32 hex digits."""
        return self.device_digest(mac).hex()

    def device_digest(self, mac: bytes) -> bytes:
        # 16 bytes rather than 32 hex characters: the visit tracker keys its state by this.
        inner = self._inner.copy()
        inner.update(mac)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:DEVICE_ID_BYTES]

    def ssid_hash(self, ssid: bytes) -> str:
        """Keyed short hash of a directed SSID: linking evidence that reveals no network name."""
        # Cached: a crowd's directed probes repeat their few networks every scan, and a full HMAC
        # per frame was a fifth of the agent's time on field traffic (tools/bench/realmix.py).
        digest = self._ssids.get(ssid)
        if digest is None:
            if len(self._ssids) >= SSID_CACHE_LIMIT:
                self._ssids.clear()
            inner = self._inner.copy()
            inner.update(b"ssid\x00" + ssid)
            outer = self._outer.copy()
            outer.update(inner.digest())
            digest = self._ssids[ssid] = outer.hexdigest()[:12]
        return digest

    def set_optout(self, hashes: Iterable[str], prefixes: Iterable[bytes] = ()) -> None:
        self.optout = frozenset(h.lower() for h in hashes)
        self.optout_prefixes = frozenset(prefixes)
        self._cache.clear()

    def identify(self, mac: bytes) -> tuple[bytes, bool, str | None] | None:
        """(device digest, randomized, partner hash or None), or None for an opted-out device.

        ``device_digest(...).hex()`` is the device id of the payloads."""
        cached = self._cache.get(mac, False)
        if cached is not False:
            if cached is None:
                self.optout_hits += 1
            return cached
        if len(self._cache) >= CACHE_LIMIT:
            # Randomized MACs are mostly seen once: a full reset is cheaper than an LRU.
            self._cache.clear()
        device = self.device_digest(mac)
        result: tuple[bytes, bool, str | None] | None
        if (self.optout and device.hex() in self.optout) or (
            self.optout_prefixes and device[:OPTOUT_PREFIX_BYTES] in self.optout_prefixes
        ):
            result = None
            self.optout_hits += 1
        else:
            randomized = is_randomized(mac)
            phash = None
            if self.partner_format is not None and not randomized:
                phash = partner_hash(mac, self.partner_format)
            result = (device, randomized, phash)
        self._cache[mac] = result
        return result
