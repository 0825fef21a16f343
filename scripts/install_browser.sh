#!/usr/bin/env bash
# The browser of the explorer's tests (tests/test_explore.py): Debian's chromium package, driven by
# Playwright for Python (installed by the `test` extra). `playwright install` downloads its own
# browser from the internet and cannot work on these machines, so the tests launch /usr/bin/chromium.
# Idempotent: does nothing when /usr/bin/chromium exists.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n1 || echo present)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get here; install Chromium and set PDE_ZOO_CHROMIUM=/path/to/chromium (the browser tests skip without it)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version 2>/dev/null | head -n1 || true
