export { GraphClient, graphClientFromConfig, appSecretProof, parsePermission, type GraphClientOptions, type PageTokens, type RetryOptions } from './GraphClient.js';
export { CALLING_ERRORS, GRAPH_ERRORS, describeMetaCode, explainGraphError, graphErrorFromResponse, graphErrorParts, type MetaErrorBody, type MetaErrorInfo } from './errors.js';
export * from './pageSetup.js';
