"""Monitor interfaces: link types, the checks that fail early with the fix, and CaptureError.

What every live source (``rawsocket``, ``scapysource``) checks before it opens an interface;
``CaptureError`` is what every frame source raises (see ``capture``).
"""

from __future__ import annotations

import errno
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_IEEE802_11 = 105
LINKTYPE_IEEE802_11_RADIOTAP = 127

ARPHRD_ETHER = 1
ARPHRD_IEEE80211 = 801
ARPHRD_IEEE80211_PRISM = 802
ARPHRD_IEEE80211_RADIOTAP = 803
ARPHRD_TO_LINKTYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_IEEE80211: LINKTYPE_IEEE802_11,
    ARPHRD_IEEE80211_RADIOTAP: LINKTYPE_IEEE802_11_RADIOTAP,
}

IFF_UP = 0x1
IFNAMSIZ = 16

SYS_NET = Path("/sys/class/net")

_CAP_HINT = (
    "needs CAP_NET_RAW: run as root, or grant the capabilities once with "
    "`setcap cap_net_raw,cap_net_admin=eip $(readlink -f $(which python3))` "
    "(systemd: AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN)"
)


class CaptureError(RuntimeError):
    """A source cannot be opened or has stopped for good; the message says how to fix it."""


def _sysfs(iface: str, attr: str, root: Path = SYS_NET) -> str | None:
    try:
        return (root / iface / attr).read_text().strip()
    except OSError:
        return None


def _valid_ifname(iface: str) -> bool:
    return (
        0 < len(iface) < IFNAMSIZ
        and "/" not in iface
        and not iface.startswith(".")
        and not any(c.isspace() for c in iface)
    )


def check_interface(iface: str, require_monitor: bool = True, root: Path = SYS_NET) -> int:
    """Fail early, with the fix in the message, instead of capturing silence. Returns the ARPHRD type."""
    if not _valid_ifname(iface):
        raise CaptureError(f"{iface!r} is not a valid interface name (1-15 characters, no '/' or spaces)")
    if not (root / iface).exists():
        present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise CaptureError(
            f"interface {iface!r} does not exist (present: {', '.join(present) or 'none'}). "
            "Create a monitor interface with `iw phy phy0 interface add mon0 type monitor && ip link set mon0 up` "
            "(`iw dev` lists the phys)."
        )
    raw_type = _sysfs(iface, "type", root)
    try:
        arphrd = int(raw_type or "")
    except ValueError as exc:
        raise CaptureError(f"cannot read the link type of {iface!r} from {root / iface / 'type'}") from exc
    if require_monitor and arphrd != ARPHRD_IEEE80211_RADIOTAP:
        phy = _sysfs(iface, "phy80211/name", root)
        if phy is None:
            raise CaptureError(
                f"interface {iface!r} is not a Wi-Fi interface in monitor mode (link type {arphrd}, "
                f"need {ARPHRD_IEEE80211_RADIOTAP} = 802.11 + radiotap) and has no wireless phy. "
                "Pick the Wi-Fi card's interface (`iw dev` lists them)."
            )
        if arphrd in (ARPHRD_IEEE80211, ARPHRD_IEEE80211_PRISM):
            raise CaptureError(
                f"interface {iface!r} delivers 802.11 without radiotap headers (link type {arphrd}); "
                f"footfall needs a radiotap monitor interface: `iw phy {phy} interface add mon0 type monitor`."
            )
        raise CaptureError(
            f"interface {iface!r} is not in monitor mode (link type {arphrd}, need {ARPHRD_IEEE80211_RADIOTAP}). "
            f"Fix: `ip link set {iface} down && iw dev {iface} set type monitor && ip link set {iface} up`, "
            f"or keep it and add a monitor interface: `iw phy {phy} interface add mon0 type monitor "
            "&& ip link set mon0 up`."
        )
    flags = _sysfs(iface, "flags", root)
    if flags is not None and not int(flags, 16) & IFF_UP:
        # A socket on a down interface opens fine and then receives nothing, forever.
        raise CaptureError(f"interface {iface!r} is down: `ip link set {iface} up`")
    return arphrd


def _permission_error(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in (errno.EPERM, errno.EACCES)
