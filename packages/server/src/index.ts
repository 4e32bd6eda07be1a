export { startServer, type RunningServer } from './daemon.js';
export { loadConfigFile, resolveSettings, DEFAULT_GROUPS, type ServerSettings, type GroupConfig } from './config.js';
export { callDaemon } from './operator/control-socket.js';
export type { DistributeEvent, DistributeResult, DeliveryView } from './operator/operations.js';
