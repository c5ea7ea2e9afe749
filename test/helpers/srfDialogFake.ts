/**
 * A stand-in for drachtio-srf's Dialog: the events SrfSipDialog listens to, and what it calls (modify, request,
 * destroy), recorded.
 */
import { EventEmitter } from 'node:events';

export class FakeSrfDialog extends EventEmitter {
  readonly id = 'call-1;from-tag=abc';
  readonly type = 'uac' as const;
  connected = true;
  readonly sip = { callId: 'call-1', localTag: 'abc', remoteTag: 'def' };
  local = { uri: 'sip:a@h', sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n', contact: '<sip:127.0.0.1:5060>' };
  remote = { uri: 'sip:b@h', sdp: 'v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\n' };
  readonly res = { body: '', type: 'response' as const, get: () => undefined, has: () => false };
  modifies: Array<{ sdp: string; headers?: Record<string, string> }> = [];
  destroys = 0;
  failModify = false;

  async destroy(): Promise<unknown> {
    this.destroys += 1;
    return undefined;
  }
  async modify(sdp: string, opts?: { headers?: Record<string, string> }): Promise<string> {
    this.modifies.push({ sdp, headers: opts?.headers });
    if (this.failModify) throw Object.assign(new Error('481'), { status: 481 });
    return this.remote.sdp;
  }
  /** In-dialog requests we sent (NOTIFY ...), in order; each is answered by `answerRequest`. */
  requests: Array<{ method: string; headers?: Record<string, string>; body?: string }> = [];
  answerRequest: () => Promise<{ status: number }> = async () => ({ status: 200 });
  async request(opts: { method: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number }> {
    this.requests.push(opts);
    return this.answerRequest();
  }
}
