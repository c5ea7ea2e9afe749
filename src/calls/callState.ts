/**
 * The call state machine as data: which event may happen in which state, and the state it leads to. A CallSession
 * applies events only through this table (`CallStateMachine`); an event the table does not allow in the current state
 * is refused (logged and counted in `msb_call_events_refused_total`) and the state does not change.
 *
 * ```
 *  consumer-initiated                        business-initiated
 *  new -invite-> inviting -pbx_ringing->     new -check_permission-> permission -connect-> connecting
 *      pbx_ringing -accept-> accepting          -meta_ringing-> meta_ringing
 *  (answer mode immediate: new -accept-> accepting -invite-> inviting ...)
 *  ... -answered-> media -media_connected-> active -refer-> transferring -transfer_over-> active
 *  any live state -end-> ending -released-> ended
 * ```
 */
import type { Logger } from 'pino';
import type { CallMetricsSink, CallOutcome } from './ports.js';
import type { SipRefusal } from './outcomes.js';

export type CallState =
  | 'new'
  | 'inviting' // user_initiated: INVITE sent to the PBX
  | 'pbx_ringing' // user_initiated: PBX sent 18x
  | 'accepting' // user_initiated: PBX answered (or answer mode immediate), Graph accept under way
  | 'permission' // business_initiated: permission check under way
  | 'connecting' // business_initiated: Graph connect under way / sent
  | 'meta_ringing' // business_initiated: Meta said ringing; 180 sent to the PBX
  | 'media' // both legs answered; waiting for ICE/DTLS toward Meta
  | 'active' // audio bridged
  | 'transferring' // audio bridged; a REFER from the PBX is being carried out (INVITE to the new target)
  | 'ending'
  | 'ended';

export type CallEvent =
  | 'invite' // INVITE sent to the PBX
  | 'pbx_ringing' // the PBX sent a 18x (again: stays)
  | 'accept' // Graph accept under way
  | 'check_permission' // Graph permission check under way
  | 'connect' // Graph connect under way
  | 'meta_ringing' // Meta's call_status ringing
  | 'answered' // both sides answered: ICE/DTLS toward Meta under way
  | 'media_connected' // audio bridged
  | 'refer' // a REFER from the PBX is carried out
  | 'transfer_over' // the transfer succeeded or failed; the call stays bridged
  | 'end' // the call is being torn down
  | 'released'; // everything released

const LIVE = { end: 'ending' } as const;

/** state x event -> next state. An event missing from a state's row is refused in that state. */
export const CALL_STATE_TABLE: Readonly<Record<CallState, Readonly<Partial<Record<CallEvent, CallState>>>>> = {
  new: { invite: 'inviting', accept: 'accepting', check_permission: 'permission', connect: 'connecting', ...LIVE },
  inviting: { pbx_ringing: 'pbx_ringing', accept: 'accepting', answered: 'media', ...LIVE },
  pbx_ringing: { pbx_ringing: 'pbx_ringing', accept: 'accepting', answered: 'media', ...LIVE },
  accepting: { invite: 'inviting', answered: 'media', ...LIVE },
  permission: { connect: 'connecting', ...LIVE },
  connecting: { meta_ringing: 'meta_ringing', answered: 'media', ...LIVE },
  meta_ringing: { answered: 'media', ...LIVE },
  media: { media_connected: 'active', ...LIVE },
  active: { refer: 'transferring', ...LIVE },
  transferring: { transfer_over: 'active', ...LIVE },
  ending: { released: 'ended' },
  ended: {},
};

/** The state `event` leads to from `state`, or undefined when the table does not allow it there. */
export function nextCallState(state: CallState, event: CallEvent): CallState | undefined {
  return CALL_STATE_TABLE[state][event];
}

/** One call's state, changed only by events the table allows; a refused event is logged and counted. */
export class CallStateMachine {
  #state: CallState = 'new';
  readonly #log: Logger;
  readonly #metrics: Pick<CallMetricsSink, 'callEventRefused'> | undefined;

  constructor(log: Logger, metrics: Pick<CallMetricsSink, 'callEventRefused'> | undefined) {
    this.#log = log;
    this.#metrics = metrics;
  }

  get state(): CallState {
    return this.#state;
  }

  /** May `event` happen now? A refused event is logged and counted (msb_call_events_refused_total). */
  permits(event: CallEvent, why: string): boolean {
    if (nextCallState(this.#state, event) !== undefined) return true;
    this.#log.warn({ state: this.#state, event, why }, 'call event refused in this state');
    this.#metrics?.callEventRefused(this.#state, event);
    return false;
  }

  /** Apply `event` through the table; false (and nothing changes) when the table refuses it here. */
  apply(event: CallEvent, why: string): boolean {
    if (!this.permits(event, why)) return false;
    const from = this.#state;
    const to = nextCallState(from, event)!;
    if (from === to) return true;
    this.#state = to;
    this.#log.info({ from, to, why }, `call ${from} -> ${to}`);
    return true;
  }
}

/** What the PBX side is told when a call ends. */
export type SipTeardown = 'bye' | 'cancel' | 'refuse' | 'none';

/**
 * The SIP teardown for a call ending now: BYE once a dialog exists; before that, a final response to the PBX's own
 * INVITE (business-initiated) or a CANCEL of ours (consumer-initiated).
 */
export function sipTeardownFor(call: { hasDialog: boolean; hasIncomingInvite: boolean }): Exclude<SipTeardown, 'none'> {
  if (call.hasDialog) return 'bye';
  return call.hasIncomingInvite ? 'refuse' : 'cancel';
}

/** How a call ends: its outcome, and what each side is told. */
export interface Ending {
  outcome: CallOutcome;
  reason: string;
  /**
   * What to tell Meta. 'auto': once any accept/connect in flight has settled, terminate an accepted call, reject an
   * unaccepted consumer-initiated one, nothing otherwise.
   */
  meta: 'reject' | 'terminate' | 'none' | 'auto';
  /** What to tell the PBX; 'auto' picks with `sipTeardownFor` when the call ends. A refusal applies before a dialog. */
  sip: SipTeardown | 'auto';
  /** The final response to the PBX's INVITE when `sip` comes to 'refuse' (from calls/outcomes.ts). */
  refusal?: SipRefusal;
}

/**
 * Thrown inside a flow once the call has ended, to leave it: the flow's single catch ends there. Flows never `return`
 * after ending the call; they throw this (through `CallFlow.stop`, or `CallFlow.step` when the end came from outside).
 */
export class CallEnded extends Error {}
