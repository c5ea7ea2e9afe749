#!/usr/bin/env node
// Launcher for the compiled daemon (npm run build writes dist/).
// mediasoup reads MEDIASOUP_WORKER_BIN when it is loaded: default it to Debian's mediasoup-worker before anything loads.
process.env.MEDIASOUP_WORKER_BIN ??= '/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker';
await import('../dist/main.js');
