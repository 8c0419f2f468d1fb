#!/usr/bin/env bash
# Debian's matplotlib and pandas for the system python3 that the local jail runs: the rich
# output tests (tests/test_rich*.py) draw figures and show DataFrames inside the sandbox.
# Idempotent: does nothing when both import already.
set -euo pipefail
if /usr/bin/python3 -c "import matplotlib, pandas" 2>/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq python3-matplotlib python3-pandas
/usr/bin/python3 -c "import matplotlib, pandas"
