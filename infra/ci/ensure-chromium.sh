#!/usr/bin/env bash
# Make sure headless Chromium is at /usr/bin/chromium: the `qc report` rendering test opens
# the generated page in it (tests/qc_worker/test_report.py). Installs Debian's `chromium`
# package with apt-get only when the binary is missing; non-interactive, safe to run twice.
# Used by `make test` (and so .ci/run) before the tests: on a fresh machine it installs
# Chromium when it can (root, or sudo without a password), else says what to do.
#
# Exit status: 0 when /usr/bin/chromium runs, 1 when it is missing and cannot be installed.
set -euo pipefail

# The path the rendering test looks at; overridable so the check itself can be tested.
CHROMIUM=${QC_CHROMIUM_PATH:-/usr/bin/chromium}

log() { echo "ensure-chromium: $*"; }
fail() { echo "ensure-chromium: ERROR: $*" >&2; exit 1; }

if [ -x "$CHROMIUM" ]; then
    log "$("$CHROMIUM" --version 2>/dev/null || echo chromium) already at $CHROMIUM"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "$CHROMIUM is missing and apt-get was not found: install Chromium yourself so that $CHROMIUM exists"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 \
        || fail "$CHROMIUM is missing: installing it needs root (run as root, or install sudo), e.g. apt-get install -y chromium"
    SUDO=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
log "installing chromium with apt-get"
"${SUDO[@]}" apt-get update -q || fail "apt-get update failed (see above)"
"${SUDO[@]}" apt-get install -y -q chromium \
    || fail "apt-get install chromium failed (see above)"
[ -x "$CHROMIUM" ] || fail "the chromium package is installed but $CHROMIUM is not there"
log "installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
