export * from '../../../src/simulator/drachtio/server.js';
