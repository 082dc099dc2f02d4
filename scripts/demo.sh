#!/usr/bin/env bash
# Install everything on a fresh Debian 12 machine, then run a demo store: a simulated
# fortnight of a shop -> two sensor agents -> Mosquitto -> hub -> dashboard on
# http://127.0.0.1:8080 (login manager / footfall-demo). Extra arguments go to `footfall demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/install.sh
exec .venv/bin/footfall demo "$@"
