#!/usr/bin/env bash
# Debian's matplotlib and pandas for the system python3 that the local jail runs: the rich
# output tests (tests/test_rich*.py) draw figures and show DataFrames inside the sandbox.
# Idempotent: does nothing when both import already.
set -euo pipefail
if /usr/bin/python3 -c "import matplotlib, pandas" 2>/dev/null; then
  exit 0
fi
# shellcheck source=apt-install.sh
. "$(dirname "$0")/apt-install.sh"
apt_install python3-matplotlib python3-pandas
/usr/bin/python3 -c "import matplotlib, pandas"
