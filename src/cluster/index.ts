export { ClusterNode, defaultInstanceId, type ClusterConfig, type ClusterNodeDeps } from './ClusterNode.js';
export { ClusterMetrics } from './ClusterMetrics.js';
export { CallCountHeadroom, type Headroom } from './Headroom.js';

import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { CallController } from '../calls/CallController.js';
import type { GraphPort } from '../calls/ports.js';
import type { Config } from '../config/schema.js';
import { ClusterMetrics as Metrics } from './ClusterMetrics.js';
import { ClusterNode as Node } from './ClusterNode.js';
import { CallCountHeadroom as CountHeadroom } from './Headroom.js';

/** The cluster node for this configuration, or undefined when `cluster.enabled` is false (a single instance). */
export function createClusterNode(
  config: Config,
  parts: {
    controller: CallController;
    graph: GraphPort;
    registry: Registry;
    log: Logger;
    maxConcurrent: () => number;
    /** The load admission refuses calls now (read without side effects). */
    refusing: () => boolean;
  },
): Node | undefined {
  if (!config.cluster.enabled) return undefined;
  const { controller } = parts;
  return new Node({
    config: config.cluster,
    sink: controller,
    registry: controller.registry,
    graph: parts.graph,
    headroom: new CountHeadroom(() => controller.activeCalls, parts.maxConcurrent, parts.refusing),
    metrics: new Metrics(parts.registry),
    log: parts.log,
    graphTimeoutMs: config.meta.graph_timeout_ms * 2,
  });
}
