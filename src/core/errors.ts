/**
 * The error catalogue. Every error the bridge raises carries a stable `code` and, where there is one, its `cause`.
 * One module (calls/outcomes.ts) maps these to HTTP statuses, SIP responses and Meta actions.
 */
export class BridgeError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A method was called on an object that is closed (mediasoup's habit). */
export class InvalidStateError extends BridgeError {
  constructor(message: string) {
    super('INVALID_STATE', message);
  }
}

/** The YAML configuration is invalid; `problems` has one line per bad path. */
export class ConfigError extends BridgeError {
  readonly problems: string[];

  constructor(problems: string[], options?: { cause?: unknown }) {
    super('CONFIG_INVALID', `invalid configuration:\n  ${problems.join('\n  ')}`, options);
    this.problems = problems;
  }
}

/** Media engine / transport / codec negotiation failures. */
export class MediaError extends BridgeError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** A leg toward Meta failed (ICE, DTLS, consent). `reason` is one of 'ice' | 'dtls' | 'consent' | 'sdp' | 'closed'. */
export class MessengerLegError extends BridgeError {
  readonly reason: 'ice' | 'dtls' | 'consent' | 'sdp' | 'closed';

  constructor(reason: MessengerLegError['reason'], message: string, options?: { cause?: unknown }) {
    super(`MESSENGER_${reason.toUpperCase()}`, message, options);
    this.reason = reason;
  }
}

/** A SIP failure with a status code the caller can branch on (drachtio-srf's SipError habit). */
export class SipError extends BridgeError {
  readonly status: number;
  readonly reason: string;

  constructor(status: number, reason: string, options?: { cause?: unknown }) {
    super(`SIP_${status}`, `${status} ${reason}`, options);
    this.status = status;
    this.reason = reason;
  }
}

/** An error answered by Meta's Graph API, or a transport failure talking to it. */
export class GraphError extends BridgeError {
  /** HTTP status, or 0 for a network failure / timeout. */
  readonly httpStatus: number;
  /** Meta's `error.code`, when Meta answered with an error body. */
  readonly metaCode?: number;
  readonly metaSubcode?: number;
  readonly fbtraceId?: string;
  /** True when retrying the same request may succeed (5xx, timeout, network). */
  readonly retryable: boolean;

  constructor(
    code: string,
    message: string,
    fields: { httpStatus: number; metaCode?: number; metaSubcode?: number; fbtraceId?: string; retryable: boolean },
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.httpStatus = fields.httpStatus;
    this.metaCode = fields.metaCode;
    this.metaSubcode = fields.metaSubcode;
    this.fbtraceId = fields.fbtraceId;
    this.retryable = fields.retryable;
  }
}

/**
 * A runtime patch of a dependency cannot bind: the installed version is not the one it was written for, or what it
 * replaces is not there. Start-up stops on it (code `DEPENDENCY_PATCH_MISMATCH`).
 */
export class DependencyPatchError extends BridgeError {
  readonly dependency: string;

  constructor(dependency: string, message: string, options?: { cause?: unknown }) {
    super('DEPENDENCY_PATCH_MISMATCH', `${dependency}: ${message}`, options);
    this.dependency = dependency;
  }
}
