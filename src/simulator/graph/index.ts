export {
  SIM_DEFAULT_SCOPES,
  CALL_METRICS_AUDIO_STATS,
  GraphSimulator,
  createGraphSimulator,
  type GraphSimulatorOptions,
  type GraphSimulatorEvents,
  type SimCall,
  type SimCallState,
  type SimAction,
  type SimTerminateEvent,
  type PermissionStatus,
  type Fault,
} from './GraphSimulator.js';
export { cannedAnswer, offerProblem } from './sdp.js';
