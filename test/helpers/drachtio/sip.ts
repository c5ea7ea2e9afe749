export * from '../../../src/simulator/drachtio/sip.js';
