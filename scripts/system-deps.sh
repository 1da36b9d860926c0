#!/usr/bin/env bash
# Install the system programs the integration tests run, when they are missing:
# redis-server and redis-cli (private Redis servers and a Redis Cluster), promtool
# (alert rules) and chromium (the UI's browser tests, driven by Playwright). Uses
# apt-get when it can (root, or passwordless sudo); otherwise prints what to install
# and leaves the decision to the tests (they fail under CI=true).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: please install ${need[*]} (no apt-get here)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "system-deps: please install ${need[*]} (apt-get needs root)" >&2
    exit 0
  fi
fi
echo "== installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start their daemons; the tests run private ones on free ports.
for svc in prometheus prometheus-node-exporter; do
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop "$svc" 2>/dev/null || true; fi
done
exit 0
