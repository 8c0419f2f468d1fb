#!/usr/bin/env bash
# Debian's Chromium for the browser test (tests/test_browser.py drives it with Playwright through
# executable_path=/usr/bin/chromium; `playwright install` downloads do not work here).
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
# shellcheck source=apt-install.sh
. "$(dirname "$0")/apt-install.sh"
apt_install chromium fonts-noto-color-emoji
test -x /usr/bin/chromium
