export {
  ConfigSchema,
  CodecNameSchema,
  META_ACCEPT_WINDOW_MS,
  SECRET_PATHS,
  isCidr,
  type Config,
  type ConfigInput,
  type PageConfig,
  type CallSettingsConfig,
  WEEKDAYS,
  type RouteConfig,
  type CodecName,
} from './schema.js';
export { loadConfig, parseConfig, parseConfigText, formatPath, isSecretPath } from './loadConfig.js';
export { redactConfig, formatConfig, REDACTED } from './redact.js';
export { pageTokens, pageIds, routeCodecs } from './accessors.js';
export { configWarnings } from './warnings.js';
