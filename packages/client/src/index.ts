export { startClient, type ClientEvents, type GroupClient } from './daemon.js';
export { defaultDownloadsDir, resolveOptions, type ClientOptions, type ResolvedOptions } from './options.js';
export { listGroups, type GroupListing, type ListGroupsOptions } from './list-groups.js';
export type { ServerInfo } from './discovery.js';
export type { ReceivedEvent, TransferEvent, UndeliveredEvent } from './receiver.js';
export { placementFor, resumeOffset, spaceShortfall, PARTIAL_DIR } from './download-area.js';
export { parseReceivedLog, type ReceivedRecord } from './received-log.js';
