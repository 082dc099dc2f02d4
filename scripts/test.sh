#!/usr/bin/env bash
# Install everything the suite needs on a fresh Debian machine, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k parse).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/install.sh
ruff_status=0
.venv/bin/ruff check . || ruff_status=$?
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
if [ "$status" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
if [ "$status" -ne 0 ]; then exit "$status"; fi
exit "$ruff_status"
