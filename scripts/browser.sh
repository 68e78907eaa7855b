#!/usr/bin/env bash
# Install Debian's chromium (for the browser tests of the "Twins results" UI plugin) when it is missing.
# Idempotent; called by the test setup. Playwright (PyPI) drives it via executable_path=/usr/bin/chromium,
# so no browser is downloaded by playwright itself. Without root or apt-get it says what to do and exits 0:
# the browser tests then skip with that reason (and fail in CI).
set -euo pipefail
CHROMIUM=${TWINS_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser: $CHROMIUM is missing and apt-get is not available; install Chromium and set TWINS_CHROMIUM" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "browser: $CHROMIUM is missing; run 'sudo apt-get install -y chromium' (needs root)" >&2
        exit 0
    fi
fi
echo "browser: installing Debian chromium with apt-get (about a minute)"
export DEBIAN_FRONTEND=noninteractive
# A stale package list can name versions the mirror no longer has: refresh it once on failure.
if ! $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null; then
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
"$CHROMIUM" --version
