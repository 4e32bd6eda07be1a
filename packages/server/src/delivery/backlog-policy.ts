// The --backlog choices, apart from distributor.ts so that the CLI can list them without loading the
// delivery machinery.

/**
 * What a member that joins a group later is given of what was distributed before (and so what the
 * store keeps for it once the deliveries ended): nothing, the newest file of each name, or every file;
 * in each case only until `--keep` runs out. The default is `latest`; docs/OPERATIONS.md says why.
 */
export const BACKLOG_POLICIES = ['none', 'latest', 'all'] as const;
export type BacklogPolicy = (typeof BACKLOG_POLICIES)[number];
export const DEFAULT_BACKLOG: BacklogPolicy = 'latest';
