// The drachtio-server double lives in src/simulator/drachtio (the demo uses it too).
export * from '../../../src/simulator/drachtio/index.js';
