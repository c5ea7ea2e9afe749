export { createLogger, callLogger, hashPsid, type LoggerOptions, type CallLogContext } from './logger.js';
export { Metrics, type MetricsOptions, type WebhookResult, type MediaDirection } from './Metrics.js';
export { buildAdminApp, type AdminAppOptions, type Readiness } from './adminApp.js';
