/**
 * Source-address ACL for SIP requests: CIDR blocks for IPv4 and IPv6. An IPv4-mapped IPv6 address
 * (`::ffff:192.0.2.1`, as dual-stack sockets report IPv4 peers) is matched against the IPv4 blocks.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { ConfigError } from '../core/errors.js';

interface Block {
  family: 4 | 6;
  /** Network address, masked. */
  network: bigint;
  prefix: number;
}

export interface Acl {
  /** True when `address` (IPv4, IPv6, or IPv4-mapped IPv6; brackets and zone ids tolerated) is inside a block. */
  allows(address: string): boolean;
  /** The blocks as configured, normalised (`10.0.0.0/8`). */
  readonly blocks: readonly string[];
}

function ipv4ToBigInt(addr: string): bigint {
  return addr.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function ipv6ToBigInt(addr: string): bigint {
  let text = addr;
  // An embedded dotted quad (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) becomes two hex groups.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = ipv4ToBigInt(tail);
    text = `${text.slice(0, lastColon + 1)}${((v4 >> 16n) & 0xffffn).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
  const headGroups = head ? head.split(':') : [];
  const restGroups = rest === undefined ? [] : rest ? rest.split(':') : [];
  const missing = 8 - headGroups.length - restGroups.length;
  const groups = rest === undefined ? headGroups : [...headGroups, ...Array<string>(missing).fill('0'), ...restGroups];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** Normalise an address as a socket or drachtio reports it: strip brackets and a zone id. */
function cleanAddress(address: string): string {
  let a = address.trim();
  if (a.startsWith('[') && a.endsWith(']')) a = a.slice(1, -1);
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  return a;
}

function toFamilyValue(address: string): { family: 4 | 6; value: bigint } | undefined {
  const a = cleanAddress(address);
  if (isIPv4(a)) return { family: 4, value: ipv4ToBigInt(a) };
  if (isIPv6(a)) {
    const value = ipv6ToBigInt(a);
    // IPv4-mapped (::ffff:0:0/96): compare as IPv4.
    if (value >> 32n === 0xffffn) return { family: 4, value: value & 0xffffffffn };
    return { family: 6, value };
  }
  return undefined;
}

function mask(family: 4 | 6, prefix: number): bigint {
  const bits = family === 4 ? 32 : 128;
  if (prefix === 0) return 0n;
  return ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
}

/** Parse one CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address (a /32 or /128). Throws on a bad one. */
export function parseCidr(cidr: string): { family: 4 | 6; network: bigint; prefix: number } {
  const slash = cidr.indexOf('/');
  const addrText = slash >= 0 ? cidr.slice(0, slash) : cidr;
  const parsed = toFamilyValue(addrText);
  if (!parsed) throw new Error(`not an IP address: '${addrText}'`);
  let prefix = parsed.family === 4 ? 32 : 128;
  if (slash >= 0) {
    const prefixText = cidr.slice(slash + 1);
    if (!/^\d{1,3}$/.test(prefixText)) throw new Error(`bad prefix length in '${cidr}'`);
    prefix = Number(prefixText);
    const writtenAsV6 = !isIPv4(cleanAddress(addrText));
    if (prefix > (writtenAsV6 ? 128 : 32)) throw new Error(`prefix length out of range in '${cidr}'`);
    // A mapped block (::ffff:10.0.0.0/104) is the IPv4 block 10.0.0.0/8.
    if (writtenAsV6 && parsed.family === 4) {
      prefix -= 96;
      if (prefix < 0) throw new Error(`prefix length too short for an IPv4-mapped block in '${cidr}'`);
    }
  }
  return { family: parsed.family, network: parsed.value & mask(parsed.family, prefix), prefix };
}

/** Build an ACL from CIDR strings. Throws ConfigError listing every bad entry. */
export function createAcl(cidrs: readonly string[]): Acl {
  const problems: string[] = [];
  const blocks: Block[] = [];
  for (const cidr of cidrs) {
    try {
      blocks.push(parseCidr(cidr));
    } catch (err) {
      problems.push(`sip.acl: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const normalised = blocks.map((b) => `${formatNetwork(b)}/${b.prefix}`);
  return Object.freeze({
    blocks: Object.freeze(normalised),
    allows(address: string): boolean {
      const parsed = toFamilyValue(address);
      if (!parsed) return false;
      return blocks.some((b) => b.family === parsed.family && (parsed.value & mask(b.family, b.prefix)) === b.network);
    },
  });
}

function formatNetwork(b: Block): string {
  if (b.family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => ((b.network >> s) & 0xffn).toString()).join('.');
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((b.network >> BigInt(i * 16)) & 0xffffn).toString(16));
  return groups.join(':');
}
