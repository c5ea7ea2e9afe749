/**
 * Reading the YAML file: syntax, `${ENV_VAR}` references, `*_file` secrets, schema validation, deep freeze.
 * Every problem found becomes one line of a single ConfigError, so an operator fixes the file in one pass.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, dirname, resolve } from 'node:path';
import YAML from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../core/errors.js';
import { ConfigSchema, SECRET_PATHS, type Config } from './schema.js';

type Env = Record<string, string | undefined>;
type PathPart = string | number;

/** `pages[1].access_token` style, as operators read it. */
export function formatPath(path: readonly PathPart[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out === '' ? '(root)' : out;
}

/** `pages[3].access_token` -> `pages[].access_token`, to compare with SECRET_PATHS. */
function pattern(path: readonly PathPart[]): string {
  return formatPath(path.map((p) => (typeof p === 'number' ? -1 : p))).replace(/\[-1\]/g, '[]');
}

export function isSecretPath(path: readonly PathPart[]): boolean {
  return SECRET_PATHS.includes(pattern(path));
}

const ENV_REF = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Replace `${NAME}` by the environment variable; `$${` stays a literal `${`. */
function interpolate(value: string, path: readonly PathPart[], ctx: ResolveContext): string {
  return value.replace(ENV_REF, (_match, name: string | undefined) => {
    if (name === undefined) return '${';
    const v = ctx.env[name];
    if (v === undefined) {
      ctx.problems.push(`${formatPath(path)}: environment variable ${name} is not set`);
      ctx.reported.add(formatPath(path));
      return '';
    }
    return v;
  });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

interface ResolveContext {
  env: Env;
  baseDir: string;
  problems: string[];
  /** Paths already reported (missing env var, unreadable file): the schema's complaints about them are noise. */
  reported: Set<string>;
}

const WHOLE_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/**
 * A non-secret value that is exactly one `${NAME}` takes the type the text would have had in the YAML file
 * (`port: ${PORT}` is a number, `comedia: ${COMEDIA}` a boolean). Secrets always stay strings.
 */
function typedValue(original: string, value: string, path: readonly PathPart[]): unknown {
  if (isSecretPath(path) || !WHOLE_REF.test(original)) return value;
  if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value);
  if (value === 'true' || value === 'false') return value === 'true';
  if (value === 'null') return null;
  return value;
}

/** Walk the raw tree: interpolate strings, read `*_file` secrets into their sibling key. */
function resolveTree(node: unknown, path: PathPart[], ctx: ResolveContext): unknown {
  if (typeof node === 'string') return typedValue(node, interpolate(node, path, ctx), path);
  if (Array.isArray(node)) return node.map((item, i) => resolveTree(item, [...path, i], ctx));
  if (!isPlainObject(node)) return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] = resolveTree(value, [...path, key], ctx);
  }
  for (const key of Object.keys(out)) {
    if (!key.endsWith('_file')) continue;
    const base = key.slice(0, -'_file'.length);
    // Only secrets may come from files; any other `*_file` key is left for the schema to refuse.
    if (!isSecretPath([...path, base])) continue;
    const filePath = out[key];
    delete out[key];
    if (base in out) {
      ctx.problems.push(`${formatPath([...path, base])}: give either ${base} or ${key}, not both`);
      continue;
    }
    if (typeof filePath !== 'string' || filePath === '') {
      ctx.problems.push(`${formatPath([...path, key])}: must be a file path`);
      ctx.reported.add(formatPath([...path, base]));
      continue;
    }
    const full = isAbsolute(filePath) ? filePath : resolve(ctx.baseDir, filePath);
    try {
      out[base] = readFileSync(full, 'utf8').trim();
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      ctx.problems.push(`${formatPath([...path, key])}: cannot read ${full} (${reason})`);
      ctx.reported.add(formatPath([...path, base]));
    }
  }
  return out;
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
  const where = formatPath(issue.path as PathPart[]);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => `${formatPath([...(issue.path as PathPart[]), key])}: unknown key`);
  }
  if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) {
    return [`${where}: required`];
  }
  return [`${where}: ${issue.message}`];
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * Validate an already parsed tree (YAML or JSON shape) and return the frozen Config.
 * `baseDir` resolves relative `*_file` paths (default: the working directory).
 */
export function parseConfig(raw: unknown, env: Env = process.env, baseDir = process.cwd()): Config {
  if (raw === null || raw === undefined) throw new ConfigError(['(root): the configuration is empty']);
  if (!isPlainObject(raw)) throw new ConfigError(['(root): must be a mapping of keys to values']);
  const problems: string[] = [];
  const reported = new Set<string>();
  const resolved = resolveTree(raw, [], { env, baseDir, problems, reported });
  const result = ConfigSchema.safeParse(resolved);
  if (!result.success) {
    for (const issue of result.error.issues) {
      if (reported.has(formatPath(issue.path as PathPart[]))) continue;
      problems.push(...describeIssue(issue));
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  return deepFreeze(result.data);
}

/** Parse YAML text; syntax errors become ConfigError lines with line and column. */
export function parseConfigText(text: string, env: Env = process.env, baseDir = process.cwd(), source = 'config'): Config {
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    // One syntax error tends to cascade into dozens; the first few locate it.
    throw new ConfigError(
      doc.errors.slice(0, 3).map((e) => {
        const pos = e.linePos?.[0];
        const firstLine = e.message.split('\n')[0] ?? e.message;
        return pos ? `${source}:${pos.line}:${pos.col}: ${firstLine}` : `${source}: ${firstLine}`;
      }),
    );
  }
  return parseConfig(doc.toJS({ maxAliasCount: 100 }), env, baseDir);
}

/**
 * Load and validate the YAML configuration at `path`.
 * Throws ConfigError (code CONFIG_INVALID, one line per problem) for every kind of failure.
 */
export function loadConfig(path: string, env: Env = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError([`${path}: cannot read the configuration file (${reason})`], { cause: err });
  }
  return parseConfigText(text, env, dirname(resolve(path)), path);
}
