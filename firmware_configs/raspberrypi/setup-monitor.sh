#!/usr/bin/env bash
# Put a Wi-Fi adapter into monitor mode for the Footfall agent (idempotent; run as root).
#
#   setup-monitor.sh [IFACE] [MONITOR] [CHANNEL] [--exclusive]
#   setup-monitor.sh wlan1 mon0 6 --exclusive
#
# IFACE is the adapter's managed interface (default wlan1: the USB adapter; wlan0 is usually
# the Pi's onboard Broadcom radio, which has no monitor mode without nexmon). Creates MONITOR
# (default mon0) on the same phy, brings it up on CHANNEL (default 6). With --exclusive the
# managed interface is removed so that nothing scans or roams on the radio and moves its channel.
# Typical use: ExecStartPre=+/usr/local/sbin/footfall-setup-monitor wlan1 mon0 6 --exclusive
set -euo pipefail

iface="${1:-wlan1}"
mon="${2:-mon0}"
channel="${3:-6}"
exclusive="${4:-}"

die() { echo "setup-monitor: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"
command -v iw >/dev/null || die "iw is not installed (apt-get install iw)"
command -v ip >/dev/null || die "ip is not installed (apt-get install iproute2)"
case "$channel" in ''|*[!0-9]*) die "channel must be a number, not '$channel'" ;; esac

if iw dev "$mon" info >/dev/null 2>&1; then
	if iw dev "$mon" info | grep -q "type monitor"; then
		phy="phy$(iw dev "$mon" info | awk '/wiphy/ {print $2}')"
	else
		die "$mon exists but is not a monitor interface"
	fi
else
	iw dev "$iface" info >/dev/null 2>&1 || die "no interface $iface (is the USB adapter plugged in? 'iw dev' lists them)"
	phy="phy$(iw dev "$iface" info | awk '/wiphy/ {print $2}')"
	# The phy must list "monitor" among its supported interface modes.
	if ! iw phy "$phy" info | sed -n '/Supported interface modes/,/:$/p' | grep -q '\* monitor'; then
		die "$iface ($phy, driver $(basename "$(readlink -f "/sys/class/net/$iface/device/driver")")) does not support monitor mode"
	fi
	# NetworkManager / wpa_supplicant would keep scanning on the managed interface.
	if command -v nmcli >/dev/null 2>&1; then
		nmcli device set "$iface" managed no 2>/dev/null || true
	fi
	iw phy "$phy" interface add "$mon" type monitor
fi

if [ "$exclusive" = "--exclusive" ] && iw dev "$iface" info >/dev/null 2>&1 && [ "$iface" != "$mon" ]; then
	ip link set "$iface" down || true
	iw dev "$iface" del
fi

ip link set "$mon" up
iw dev "$mon" set channel "$channel" || die "$mon could not tune to channel $channel (regulatory domain? 'iw reg get')"
echo "setup-monitor: $mon on $phy, channel $channel"
iw dev "$mon" info
