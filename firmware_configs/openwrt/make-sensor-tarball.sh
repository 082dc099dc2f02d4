#!/usr/bin/env bash
# Build footfall-sensor.tgz: the agent's Python code plus paho-mqtt 2.x, nothing else, for a
# router that has only opkg's python3-light & co. (packages.txt). Run on any Linux PC from a
# checkout of the repository:
#
#   firmware_configs/openwrt/make-sensor-tarball.sh [OUT.tgz]
#
# then on the router: tar -xzf footfall-sensor.tgz -C /opt/footfall   (-> /opt/footfall/lib)
#
# Sources (.py) are shipped, not bytecode: a .pyc only loads on the exact Python minor version
# that wrote it, and the router's may differ from the PC's. The overlay filesystem compresses.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-$PWD/footfall-sensor.tgz}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
python="${PYTHON:-python3}"
paho_spec="${PAHO_SPEC:-paho-mqtt>=2.0,<3}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
lib="$work/lib"
mkdir -p "$lib/footfall/edge_agent"

cp "$repo"/footfall/*.py "$lib/footfall/"
cp "$repo"/edge_agent/*.py "$lib/footfall/edge_agent/"

if [ -n "${PAHO_FROM:-}" ]; then
	# an installed paho-mqtt 2.x (e.g. a virtualenv's site-packages directory)
	cp -r "$PAHO_FROM/paho" "$lib/"
elif [ -n "${PAHO_WHEEL:-}" ]; then
	# offline: a wheel downloaded earlier (pip download --no-deps 'paho-mqtt>=2,<3')
	"$python" -m zipfile -e "$PAHO_WHEEL" "$lib"
else
	"$python" -m pip install --quiet --no-deps --no-compile --target "$lib" "$paho_spec"
fi
# Only the importable code: no metadata, no caches, no type stubs.
rm -rf "${lib:?}"/*.dist-info "${lib:?}"/bin
find "$lib" -name __pycache__ -prune -exec rm -rf {} +
find "$lib" -name '*.pyi' -delete

tar -C "$work" -czf "$out" lib
echo "$out: $(du -k "$out" | cut -f1) KB compressed, $(du -sk "$lib" | cut -f1) KB installed"
