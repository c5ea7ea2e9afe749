#!/usr/bin/env bash
# Installs everything messenger-sip-bridge needs on Debian 12, from Debian's archive and npm only:
#   - Debian packages: mediasoup-worker (from the `experimental` suite, pinned low so nothing else comes from it),
#     sip-tester (sipp), baresip-core, rtpengine-daemon (tests and benchmarks), systemd (systemd-analyze),
#     redis-server (the shared store of several instances, `cluster:`; the cluster tests start their own)
#   - npm packages from package-lock.json (npm ci), then the TypeScript build (dist/)
# Idempotent. Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
WORKER_BIN=/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker

log() { printf '[install] %s\n' "$*"; }

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "[install] Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))." >&2
  exit 1
fi

# Debian's experimental suite, from the same archive this machine already uses, pinned at priority 1.
if [ ! -f /etc/apt/sources.list.d/messenger-sip-bridge-experimental.sources ]; then
  uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 ~ / bookworm / { print $2; exit }' /etc/apt/sources.list)
  fi
  if [ -z "$uri" ]; then
    echo "[install] cannot find this machine's Debian archive URI in /etc/apt" >&2
    exit 1
  fi
  log "adding Debian experimental (pinned to priority 1) from $uri"
  $SUDO tee /etc/apt/sources.list.d/messenger-sip-bridge-experimental.sources >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: experimental
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO tee /etc/apt/preferences.d/messenger-sip-bridge-experimental >/dev/null <<PIN
Package: *
Pin: release a=experimental
Pin-Priority: 1
PIN
fi

log "apt-get update"
$SUDO apt-get update -qq
log "installing Debian packages"
$SUDO apt-get install -y -qq --no-install-recommends \
  mediasoup-worker=3.8.4~dfsg1-1 sip-tester baresip-core rtpengine-daemon systemd strace openssl redis-server >/dev/null

if [ ! -x "$WORKER_BIN" ]; then
  echo "[install] $WORKER_BIN is missing after installing mediasoup-worker" >&2
  exit 1
fi

# MEDIASOUP_WORKER_BIN makes the npm mediasoup package skip building its own worker.
export MEDIASOUP_WORKER_BIN="$WORKER_BIN"
log "npm ci"
npm ci --no-audit --no-fund --loglevel=error
log "building (tsc)"
npm run -s build
log "done"
