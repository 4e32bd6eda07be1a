export { startClient, type ClientEvents, type GroupClient } from './daemon.js';
export { defaultDownloadsDir, resolveOptions, type ClientOptions, type ResolvedOptions } from './options.js';
export { listGroups, type GroupListing, type ListGroupsOptions } from './discovery/list-groups.js';
export type { ServerInfo } from './discovery/discovery.js';
export type { ReceivedEvent, TransferEvent, UndeliveredEvent } from './receive/events.js';
export { placementFor, resumeOffset, spaceShortfall, PARTIAL_DIR } from './receive/download-area.js';
export { parseReceivedLog, type ReceivedRecord } from './receive/received-log.js';
