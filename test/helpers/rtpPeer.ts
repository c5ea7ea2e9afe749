// The RTP peer lives in src/simulator/pbx (the demo's SIP peer uses it too).
export * from '../../src/simulator/pbx/rtpPeer.js';
