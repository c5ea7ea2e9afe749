/**
 * Meta's side of one call for a bench, in a process of its own (the simulator's media server: a mediasoup worker
 * with ICE-lite, DTLS and SRTP), so that what the bench measures in its own process is the bridge alone.
 *
 * Started with `fork()` by `startMetaPeer()`; it answers the bridge's offer, says when DTLS is up, and on request
 * sends Opus frames encoded ahead (a 1 kHz tone at 48 kHz) in bursts, as fast as asked.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Encoder } from '@evan/opus';
import { pino } from 'pino';
import { MetaMediaServer, type MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import { SineSource } from '../../src/simulator/media/audio.js';

type ToChild =
  | { type: 'offer'; sdp: string }
  | { type: 'send'; packets: number; burst: number; intervalMs: number }
  | { type: 'close' };
type FromChild =
  | { type: 'answer'; sdp: string }
  | { type: 'connected' }
  | { type: 'sent'; packets: number }
  | { type: 'received'; packets: number }
  | { type: 'error'; message: string };

/** The parent's handle on the Meta peer process. */
export interface MetaPeer {
  pid: number;
  /** Answer the bridge leg's offer; resolves with Meta's answer. */
  answer(offerSdp: string): Promise<string>;
  /** Resolves once ICE and DTLS are up on Meta's side. */
  connected(): Promise<void>;
  /** Send `packets` Opus frames toward the bridge, `burst` at a time every `intervalMs`; resolves when all left. */
  send(packets: number, burst: number, intervalMs: number): Promise<void>;
  /** Ends the process (idempotent). */
  close(): void;
}

/** Fork the Meta peer; every wait on it has a deadline of `timeoutMs`. */
export function startMetaPeer(timeoutMs = 30_000): MetaPeer {
  const child: ChildProcess = fork(import.meta.filename, ['--child'], { execArgv: process.execArgv, stdio: 'inherit' });
  const next = <T extends FromChild['type']>(type: T): Promise<Extract<FromChild, { type: T }>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`Meta peer: no '${type}' within ${timeoutMs} ms`)), timeoutMs);
      const onMessage = (m: FromChild): void => {
        if (m.type === 'error') done(new Error(`Meta peer: ${m.message}`));
        else if (m.type === type) done(undefined, m as Extract<FromChild, { type: T }>);
      };
      const onExit = (): void => done(new Error('Meta peer exited'));
      function done(err: Error | undefined, m?: Extract<FromChild, { type: T }>): void {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        if (err) reject(err);
        else resolve(m!);
      }
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
  const post = (m: ToChild): void => {
    child.send(m);
  };
  let closed = false;
  return {
    pid: child.pid!,
    async answer(sdp) {
      const answer = next('answer');
      post({ type: 'offer', sdp });
      return (await answer).sdp;
    },
    async connected() {
      await next('connected');
    },
    async send(packets, burst, intervalMs) {
      const sent = next('sent');
      post({ type: 'send', packets, burst, intervalMs });
      await sent;
    },
    close() {
      if (closed) return;
      closed = true;
      if (child.connected) post({ type: 'close' });
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    },
  };
}

async function childMain(): Promise<void> {
  const reply = (m: FromChild): void => {
    process.send!(m);
  };
  const server = await MetaMediaServer.create({ listenIp: '127.0.0.1', log: pino({ level: 'warn' }) });
  const encoder = new Encoder({ channels: 1, sample_rate: 48000, application: 'voip' });
  const tone = new SineSource([1000], 0.3);
  const frames = Array.from({ length: 50 }, () => Buffer.from(encoder.encode(tone.next())));
  let session: MetaMediaSession | undefined;
  process.on('message', (m: ToChild) => {
    void (async () => {
      if (m.type === 'offer') {
        const answered = await server.answerOffer(m.sdp);
        session = answered.session;
        reply({ type: 'answer', sdp: answered.sdp });
        await session.whenConnected();
        reply({ type: 'connected' });
      } else if (m.type === 'send') {
        const s = session!;
        let sent = 0;
        const timer = setInterval(() => {
          for (let i = 0; i < m.burst && sent < m.packets; i++) s.sendOpusPayload(frames[sent++ % frames.length]!);
          if (sent >= m.packets) {
            clearInterval(timer);
            reply({ type: 'sent', packets: sent });
          }
        }, m.intervalMs);
      } else {
        session?.close();
        server.close();
        process.exit(0);
      }
    })().catch((err: unknown) => reply({ type: 'error', message: String(err) }));
  });
  process.on('disconnect', () => process.exit(0));
}

if (process.argv.includes('--child')) await childMain();
