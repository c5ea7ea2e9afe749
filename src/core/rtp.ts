/**
 * A source and sink of plain (unencrypted) RTP packets. The Messenger leg implements it after SRTP;
 * the media engine consumes it. Packets are whole RTP packets (header + payload), one per call.
 */
export interface RtpEndpoint {
  /** Send one RTP packet out of this endpoint (toward its far end). Never throws; drops when not connected. */
  sendRtp(packet: Buffer): void;
  /** Subscribe to RTP packets received from the far end. Returns the unsubscribe function. */
  onRtp(listener: (packet: Buffer) => void): () => void;
}

/**
 * Why a packet arriving on the PBX-facing RTP port was dropped: a fixed set (the labels of msb_rtp_dropped_total).
 * With SRTP: `srtp_auth` (authentication failed, or no key yet), `srtp_replay`, `srtp_expired` (key lifetime used up).
 */
export const RTP_DROP_REASONS = ['wrong_source', 'before_sdp', 'malformed', 'srtp_auth', 'srtp_replay', 'srtp_expired'] as const;
export type RtpDropReason = (typeof RTP_DROP_REASONS)[number];
