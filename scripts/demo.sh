#!/usr/bin/env bash
# Installs what is needed (scripts/install.sh) and runs the built-in demo: a local Meta simulator, the bridge and a
# local SIP peer, all on loopback; prints what happened to the call.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIP_INSTALL:-0}" != "1" ]; then bash scripts/install.sh; fi
export MEDIASOUP_WORKER_BIN=/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker
exec node dist/main.js demo "$@"
