#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian packages chromium, chromium-driver)
# for the report test (tests/py/report_check.py), unless /usr/bin/chromium is already
# there. Idempotent and quiet: prints one line when it installs, the apt log when it fails.
# Runs `apt-get update` only when the package lists do not know the packages yet.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "infra/chromium.sh: no apt-get here; install Chromium so that /usr/bin/chromium exists" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "infra/chromium.sh: installing Chromium needs root (or sudo)" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
apt() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 "$@" >>"$log" 2>&1; }

echo "installing chromium and chromium-driver (apt-get)"
started=$(date +%s)
# A candidate version for both packages means the lists are current enough to install from.
if [ "$(apt-cache policy chromium chromium-driver 2>/dev/null | grep -c 'Candidate: [^(]')" -lt 2 ]; then
  apt update || { cat "$log" >&2; echo "infra/chromium.sh: apt-get update failed" >&2; exit 1; }
fi
if ! apt install chromium chromium-driver; then
  # Lists that name a version the mirror no longer has: refresh them once and retry.
  apt update && apt install chromium chromium-driver || {
    cat "$log" >&2; echo "infra/chromium.sh: apt-get install chromium chromium-driver failed" >&2; exit 1; }
fi
[ -x /usr/bin/chromium ] || { cat "$log" >&2; echo "infra/chromium.sh: /usr/bin/chromium is still missing" >&2; exit 1; }
echo "$(/usr/bin/chromium --version 2>/dev/null | head -1) installed in $(( $(date +%s) - started )) s"
