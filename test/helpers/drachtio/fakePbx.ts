export * from '../../../src/simulator/drachtio/fakePbx.js';
