import type { CodecName, Config, RouteConfig } from './schema.js';

/** Page id -> access token, for the Graph client. */
export function pageTokens(config: Config): Map<string, string> {
  return new Map(config.pages.map((page) => [page.id, page.access_token]));
}

/** The page ids the webhook layer accepts events for. */
export function pageIds(config: Config): Set<string> {
  return new Set(config.pages.map((page) => page.id));
}

/** A route's codec preference, else the media default. */
export function routeCodecs(config: Config, route: RouteConfig): CodecName[] {
  return [...(route.codecs ?? config.media.codecs)];
}
