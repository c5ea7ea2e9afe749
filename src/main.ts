/**
 * The CLI: argv, signals and exit codes. Only this file reads argv, installs signal handlers and exits; other modules
 * read what they need of `process` (the environment, CPU usage, the Node version) but never take it over.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError } from './core/errors.js';

/** sysexits.h EX_CONFIG: the systemd unit does not restart on it. */
export const EXIT_CONFIG = 78;
const DEFAULT_CONFIG = '/etc/messenger-sip-bridge/config.yaml';

const HELP = `messenger-sip-bridge: answer and place Facebook Messenger voice calls from your SIP PBX

Usage:
  messenger-sip-bridge [--config <file>]          run the daemon (default ${DEFAULT_CONFIG})
  messenger-sip-bridge check-config [<file>]      validate and print the effective config (secrets redacted)
  messenger-sip-bridge setup [--config <file>] [--dry-run]
                                                  check the Page tokens, subscribe the webhook fields, apply the
                                                  Pages' call settings at Meta (see --help setup)
  messenger-sip-bridge doctor [--config <file>]   check what stands between this host and a working call
                                                  (see --help doctor)
  messenger-sip-bridge demo [--duration <s>]      a whole call on loopback: Meta simulator, bridge, SIP peer
  messenger-sip-bridge simulate-call --bridge <url> --secret <app secret> [options]
                                                  play Meta against a running bridge (see --help simulate-call)
  messenger-sip-bridge --version | --help

Exit codes: 0 ok, 1 failure, 78 invalid configuration.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--help' || command === '-h' || command === 'help') {
    if (rest[0] === 'simulate-call') {
      const { SIMULATE_CALL_HELP } = await import('./cli/simulateCall.js');
      process.stdout.write(`${SIMULATE_CALL_HELP}\n`);
    } else if (rest[0] === 'doctor') {
      const { DOCTOR_HELP } = await import('./cli/doctor.js');
      process.stdout.write(`${DOCTOR_HELP}\n`);
    } else if (rest[0] === 'setup') {
      const { SETUP_HELP } = await import('./cli/setup.js');
      process.stdout.write(`${SETUP_HELP}\n`);
    } else {
      process.stdout.write(`${HELP}\n`);
    }
    return 0;
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (command === 'check-config') {
    const { values, positionals } = parseArgs({ args: rest, options: { config: { type: 'string' } }, allowPositionals: true });
    const file = positionals[0] ?? values.config ?? DEFAULT_CONFIG;
    const { loadConfig, formatConfig, configWarnings } = await import('./config/index.js');
    const config = loadConfig(file);
    process.stdout.write(`${file}: OK\n`);
    for (const warning of configWarnings(config)) process.stdout.write(`warning: ${warning}\n`);
    process.stdout.write(`${formatConfig(config)}\n`);
    return 0;
  }
  if (command === 'setup') {
    const { runSetup } = await import('./cli/setup.js');
    return runSetup(rest, DEFAULT_CONFIG, (line) => process.stdout.write(`${line}\n`));
  }
  if (command === 'doctor') {
    const { runDoctor } = await import('./cli/doctor.js');
    return runDoctor(rest, DEFAULT_CONFIG, (line) => process.stdout.write(`${line}\n`));
  }
  if (command === 'demo') {
    const { runDemo } = await import('./cli/demo.js');
    return runDemo(rest);
  }
  if (command === 'simulate-call') {
    const { runSimulateCall } = await import('./cli/simulateCall.js');
    return runSimulateCall(rest);
  }
  if (command !== undefined && !command.startsWith('-')) {
    process.stderr.write(`unknown command '${command}'\n\n${HELP}\n`);
    return 2;
  }
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } } });
  return runDaemon(values.config ?? DEFAULT_CONFIG);
}

async function runDaemon(file: string): Promise<number> {
  const { loadConfig } = await import('./config/index.js');
  const config = loadConfig(file);
  // mediasoup reads this when it loads; the media engine imports it after this point.
  process.env.MEDIASOUP_WORKER_BIN = config.media.worker_bin;
  const { createLogger } = await import('./observability/index.js');
  const log = createLogger({ level: config.logging.level, pretty: process.stdout.isTTY === true });
  const { Daemon } = await import('./daemon/Daemon.js');
  let daemon;
  try {
    daemon = await Daemon.start(config, { log });
  } catch (err) {
    log.fatal({ err }, 'start-up failed');
    return 1;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn({ signal }, 'second stop signal: exiting now');
        resolve(1);
        return;
      }
      stopping = true;
      log.info({ signal }, 'stopping: draining calls');
      daemon
        .stop(config.calls.drain_timeout_ms)
        .then(() => resolve(0))
        .catch((err: unknown) => {
          log.error({ err }, 'shutdown failed');
          resolve(1);
        });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      try {
        const next = loadConfig(file);
        daemon.reload(next);
        log.info('configuration reloaded');
      } catch (err) {
        log.error({ err: err instanceof ConfigError ? err.problems : err }, 'reload failed: keeping the running configuration');
      }
    });
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
