export { startServer, type RunningServer } from './daemon.js';
export { resolveSettings, DEFAULT_GROUPS, type ServerSettings } from './config.js';
export { loadConfigFile, type GroupConfig } from './config-schema.js';
export { callDaemon } from './operator/control-socket.js';
export type { DistributeEvent, DistributeResult, DeliveryView } from './operator/operations.js';
