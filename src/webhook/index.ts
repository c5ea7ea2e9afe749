export { buildWebhookApp, verifySignature, webhookSettingsFromConfig, DEFAULT_WEBHOOK_LIMITS, type WebhookAppOptions, type WebhookLimits, type WebhookSettings } from './webhookApp.js';
export { parseWebhookBody, toSeconds, type ParsedWebhook, type ParseProblem } from './parseEvents.js';
export { EventFilter, TtlCache, CONNECT_MAX_AGE_SECONDS, dedupeKey, type FilterVerdict, type EventFilterOptions } from './EventFilter.js';
