/**
 * Meta's Graph API errors -> GraphError with a stable `code` and a message an operator can act on.
 *
 * Meta answers errors as `{ error: { message, type, code, error_subcode, fbtrace_id, is_transient? } }`.
 * The calling API uses codes 2018389-2018396. Meta's calling pages list the failures (invalid call or page id,
 * invalid SDP/ICE, permissions, already accepted, already rejected, call already failed or ended, app not call owner,
 * person has not given permission, limits) but do not publish which number is which: the assignment below is ours,
 * kept in this one table, used both by the client and by the simulator. Every message carries Meta's own code and
 * text, so a log line stays exact even where our reading of a number is wrong.
 */
import { GraphError } from '../core/errors.js';

export interface MetaErrorBody {
  message?: string;
  type?: string;
  code?: number;
  error_subcode?: number;
  fbtrace_id?: string;
  is_transient?: boolean;
}

export interface MetaErrorInfo {
  /** GraphError.code */
  code: string;
  /** What it means for the bridge. */
  description: string;
  /** HTTP status Meta uses for it (the simulator answers with this). */
  httpStatus: number;
  retryable: boolean;
}

/** Calling-specific codes. */
export const CALLING_ERRORS: Readonly<Record<number, MetaErrorInfo>> = {
  2018389: { code: 'CALL_NOT_FOUND', description: 'call not found or expired (unknown call id for this page)', httpStatus: 400, retryable: false },
  2018390: { code: 'CALL_INVALID_SDP', description: 'invalid connection info (SDP or ICE) in the request', httpStatus: 400, retryable: false },
  2018391: { code: 'CALL_PERMISSION_MISSING', description: 'no permission: the person has not allowed calls from this page', httpStatus: 400, retryable: false },
  2018392: { code: 'CALL_ALREADY_ACCEPTED', description: 'call already accepted', httpStatus: 400, retryable: false },
  2018393: { code: 'CALL_ALREADY_REJECTED', description: 'call already rejected', httpStatus: 400, retryable: false },
  2018394: { code: 'CALL_ENDED', description: 'call already ended (failed or completed)', httpStatus: 400, retryable: false },
  2018395: { code: 'CALL_NOT_OWNER', description: 'this app is not the call owner (check the page call routing)', httpStatus: 400, retryable: false },
  2018396: { code: 'CALL_LIMIT', description: 'calling limit reached for this page or person (the exact limit is not documented)', httpStatus: 400, retryable: false },
};

/** General Graph API codes the bridge can meet. */
export const GRAPH_ERRORS: Readonly<Record<number, MetaErrorInfo>> = {
  1: { code: 'META_UNKNOWN', description: 'Graph API unknown error (transient)', httpStatus: 500, retryable: true },
  2: { code: 'META_SERVICE', description: 'Graph API service temporarily unavailable', httpStatus: 503, retryable: true },
  4: { code: 'RATE_LIMITED', description: 'application request limit reached', httpStatus: 400, retryable: true },
  10: { code: 'PERMISSION_DENIED', description: 'the app lacks a permission for this call (e.g. pages_messaging)', httpStatus: 400, retryable: false },
  17: { code: 'RATE_LIMITED', description: 'user request limit reached', httpStatus: 400, retryable: true },
  32: { code: 'RATE_LIMITED', description: 'page request limit reached', httpStatus: 400, retryable: true },
  100: { code: 'BAD_PARAMETER', description: 'invalid parameter', httpStatus: 400, retryable: false },
  190: { code: 'BAD_TOKEN', description: 'access token invalid or expired: replace the page token', httpStatus: 400, retryable: false },
  200: { code: 'PERMISSION_DENIED', description: 'permission error', httpStatus: 400, retryable: false },
  613: { code: 'RATE_LIMITED', description: 'calls to this API exceeded the rate limit', httpStatus: 400, retryable: true },
};

export function describeMetaCode(code: number | undefined): MetaErrorInfo | undefined {
  if (code === undefined) return undefined;
  return CALLING_ERRORS[code] ?? GRAPH_ERRORS[code];
}

/** Build the GraphError for an HTTP answer that is an error (status >= 400 or an `error` body). */
export function graphErrorFromResponse(action: string, httpStatus: number, body: unknown): GraphError {
  const err = (typeof body === 'object' && body !== null && 'error' in body ? (body as { error: unknown }).error : undefined) as
    | MetaErrorBody
    | undefined;
  const metaCode = typeof err?.code === 'number' ? err.code : undefined;
  const info = describeMetaCode(metaCode);
  const fields = {
    httpStatus,
    metaCode,
    metaSubcode: typeof err?.error_subcode === 'number' ? err.error_subcode : undefined,
    fbtraceId: typeof err?.fbtrace_id === 'string' ? err.fbtrace_id : undefined,
  };
  if (info) {
    return new GraphError(
      `GRAPH_${info.code}`,
      `${action}: ${info.description} (Meta code ${metaCode}${fields.metaSubcode ? `/${fields.metaSubcode}` : ''}: ${err?.message ?? 'no message'})`,
      { ...fields, retryable: info.retryable || err?.is_transient === true },
    );
  }
  const retryable = httpStatus >= 500 || err?.is_transient === true;
  const what = metaCode !== undefined ? `Meta code ${metaCode}` : `HTTP ${httpStatus}`;
  return new GraphError(
    httpStatus >= 500 ? 'GRAPH_SERVER_ERROR' : 'GRAPH_REQUEST_FAILED',
    `${action}: ${what}${err?.message ? `: ${err.message}` : ''}`,
    { ...fields, retryable },
  );
}

/** What an operator does about a GraphError, by its code (setup and doctor print it after Meta's words). */
const FIXES: Readonly<Record<string, string>> = {
  GRAPH_BAD_TOKEN: 'create a new Page access token for this Page and put it in pages[].access_token',
  GRAPH_PERMISSION_DENIED: 'grant the named permission to the app (App Review, or a tester role while in development) and create a new Page token with it',
  GRAPH_RATE_LIMITED: 'Meta is limiting this app or Page: run it again in a few minutes',
  GRAPH_BAD_PARAMETER: 'check the value in the YAML against Meta\'s documentation (docs/META-CALLING.md)',
  GRAPH_SETTINGS_REFUSED: 'Meta did not apply it: check that the Page may use Messenger calling and that the token can manage the Page',
  GRAPH_TIMEOUT: 'check outbound HTTPS from this host to meta.graph_base_url (firewall, proxy), or raise meta.graph_timeout_ms',
  GRAPH_NETWORK: 'check outbound HTTPS from this host to meta.graph_base_url (DNS, firewall, proxy)',
  GRAPH_META_UNKNOWN: 'a temporary error at Meta: run it again',
  GRAPH_META_SERVICE: 'Meta\'s service is temporarily unavailable: run it again',
  GRAPH_SERVER_ERROR: 'an error at Meta: run it again; if it persists, quote the fbtrace_id to Meta',
};

/** What happened (Meta's code and text included) and, when known, what an operator does about it. */
export function graphErrorParts(err: unknown): { what: string; fix?: string } {
  if (!(err instanceof GraphError)) return { what: err instanceof Error ? err.message : String(err) };
  const fix = FIXES[err.code];
  const trace = err.fbtraceId !== undefined ? ` [fbtrace_id ${err.fbtraceId}]` : '';
  return { what: `${err.message}${trace}`, ...(fix !== undefined ? { fix } : {}) };
}

/** One line an operator can act on: what happened in plain words, Meta's own code and text, and the fix. */
export function explainGraphError(err: unknown): string {
  const { what, fix } = graphErrorParts(err);
  return fix !== undefined ? `${what} - fix: ${fix}` : what;
}
