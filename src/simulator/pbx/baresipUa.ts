/**
 * A real SIP user agent for the demo: baresip (Debian's `baresip-core`) on loopback, answering every call at once,
 * sending a sine tone and recording what it decodes (its sndfile module), so that the demo can tell which tone
 * crossed the bridge toward the PBX side.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { RtpPeerCodec } from './rtpPeer.js';

const MODULE_PATH = '/usr/lib/baresip/modules';

export interface BaresipUaOptions {
  /** SIP port on 127.0.0.1. */
  port: number;
  /** Frequency of the tone it sends (Hz). */
  toneHz: number;
  codec: RtpPeerCodec;
  /**
   * Media encryption of its account (its srtp module, SDES keys): 'srtp-mand' offers and accepts RTP/SAVP only,
   * 'srtp' offers RTP/AVP with keys. Default none (plain RTP).
   */
  mediaenc?: 'srtp-mand' | 'srtp';
  /** Call this URI once started (a business-initiated call when it is the bridge). */
  dial?: string;
  /**
   * Also take SIP over TLS, with a self-signed certificate made for it (openssl): baresip listens for TLS on
   * `port` + 1, and `uri` names that port with `;transport=tls`.
   */
  tls?: boolean;
  /** Offer and accept RTP/RTCP multiplexing (`rtcp_mux yes`; baresip's default is no). Default false. */
  rtcpMux?: boolean;
}

export interface BaresipUa {
  /** The URI to dial: sip:demo@127.0.0.1:<port>. */
  readonly uri: string;
  /** What baresip printed (for diagnostics). */
  output(): string;
  /** The audio baresip decoded during the last call (mono, at its sample rate); undefined when none was recorded. */
  heard(): { pcm: Int16Array; sampleRate: number } | undefined;
  close(): void;
}

/** Whether baresip and its modules are installed (Debian package baresip-core). */
export function baresipAvailable(): boolean {
  const probe = spawnSync('baresip', ['-h'], { encoding: 'utf8', timeout: 5000 });
  return probe.error === undefined && readdirSafe(MODULE_PATH).includes('ausine.so');
}

export async function startBaresipUa(options: BaresipUaOptions): Promise<BaresipUa> {
  const dir = mkdtempSync(path.join(tmpdir(), 'msb-baresip-'));
  const certificate = options.tls ? selfSignedPem(dir) : undefined;
  const codecModule = options.codec === 'opus' ? 'opus.so' : 'g711.so';
  const codecName = options.codec === 'opus' ? 'opus/48000/2' : `${options.codec}/8000/1`;
  writeFileSync(
    path.join(dir, 'config'),
    [
      'poll_method epoll',
      `sip_listen 127.0.0.1:${options.port}`,
      'net_interface 127.0.0.1',
      `rtcp_mux ${options.rtcpMux ? 'yes' : 'no'}`,
      `audio_source ausine,${options.toneHz}`,
      'audio_player aufile,/dev/null',
      'audio_alert aufile,/dev/null',
      // ausine makes 48 kHz stereo only; baresip resamples to the codec.
      'ausrc_srate 48000',
      'auplay_srate 48000',
      'ausrc_channels 2',
      'auplay_channels 2',
      `module_path ${MODULE_PATH}`,
      `module ${codecModule}`,
      'module ausine.so',
      ...(options.mediaenc ? ['module srtp.so'] : []),
      'module aufile.so',
      'module sndfile.so',
      `snd_path ${dir}`,
      ...(certificate ? [`sip_certificate ${certificate}`] : []),
      'module_app account.so',
      'module_app menu.so',
      '',
    ].join('\n'),
  );
  const mediaenc = options.mediaenc ? `;mediaenc=${options.mediaenc}` : '';
  writeFileSync(path.join(dir, 'accounts'), `<sip:demo@127.0.0.1>;regint=0;answermode=auto;audio_codecs=${codecName}${mediaenc}\n`);

  let output = '';
  const args = ['-f', dir, ...(options.dial ? ['-e', `/dial ${options.dial}`] : [])];
  const child: ChildProcess = spawn('baresip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const started = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(true), 700);
    child.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!started) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`baresip did not start: ${output.trim().split('\n').slice(-3).join(' | ') || 'not found'}`);
  }
  return {
    uri: options.tls ? `sip:demo@127.0.0.1:${options.port + 1};transport=tls` : `sip:demo@127.0.0.1:${options.port}`,
    output: () => output,
    heard: () => {
      const decoded = readdirSafe(dir)
        .filter((f) => f.startsWith('dump-') && f.endsWith('-dec.wav'))
        .sort();
      const last = decoded.at(-1);
      return last ? readWavMono(path.join(dir, last)) : undefined;
    },
    close: () => {
      child.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A UDP port on 127.0.0.1 that was free a moment ago (for baresip's SIP listener). */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/** A self-signed certificate and its key in one PEM file (what baresip's sip_certificate takes), made by openssl. */
function selfSignedPem(dir: string): string {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const made = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-keyout', key, '-out', cert],
    { encoding: 'utf8', timeout: 20_000 },
  );
  if (made.status !== 0) throw new Error(`openssl could not make a test certificate: ${made.stderr ?? made.error?.message}`);
  const pem = path.join(dir, 'tls.pem');
  writeFileSync(pem, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'), { mode: 0o600 });
  return pem;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** A 16-bit PCM WAV file's first channel. */
function readWavMono(file: string): { pcm: Int16Array; sampleRate: number } | undefined {
  const buf = readFileSync(file);
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') return undefined;
  let channels = 1;
  let sampleRate = 8000;
  let pos = 12;
  while (pos + 8 <= buf.length) {
    const id = buf.toString('ascii', pos, pos + 4);
    const size = buf.readUInt32LE(pos + 4);
    const body = pos + 8;
    if (id === 'fmt ') {
      channels = buf.readUInt16LE(body + 2);
      sampleRate = buf.readUInt32LE(body + 4);
    } else if (id === 'data') {
      // sndfile writes the header before the data and fixes the sizes when the call ends: take what is there.
      const end = size === 0 || body + size > buf.length ? buf.length : body + size;
      const frames = Math.floor((end - body) / (2 * channels));
      const pcm = new Int16Array(frames);
      for (let i = 0; i < frames; i++) pcm[i] = buf.readInt16LE(body + i * 2 * channels);
      return { pcm, sampleRate };
    }
    pos = body + size + (size % 2);
  }
  return undefined;
}
