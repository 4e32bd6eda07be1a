import { hostname } from 'node:os';
import {
  definedOnly, DEFAULT_GROUP_ADDRESS, DEFAULT_TCP_PORT, DEFAULT_UDP_PORT, HEARTBEAT_TIMEOUT_MS, MAX_SERVER_NAME, type LogFormat,
} from '@groupcast/shared';
import { DEFAULT_MAX_OPEN_MEMBERS, DEFAULT_OPEN_MEMBER_EXPIRY_MS } from './control/membership.js';
import { DEFAULT_BACKLOG, type BacklogPolicy } from './delivery/backlog-policy.js';
import type { ConfigFile, GroupConfig } from './config-schema.js';

/** A sanity bound on --max-open-members: past it, members.json and fan-out stop being cheap. */
export const MAX_OPEN_MEMBERS_LIMIT = 100_000;

export const DEFAULT_GROUPS: GroupConfig[] = [
  { name: 'Developers', description: 'Source, builds and tools for developers', open: false, members: [] },
  { name: 'Designers', description: 'Design assets and fonts', open: false, members: [] },
];

/**
 * The server's settings. Precedence: flags > GROUPCAST_* environment > config file > built-in
 * defaults. The config file is JSON with comments (starter-config.ts holds the one `init` writes); its keys are
 * the flags' names in camelCase, plus `groups`.
 */
export interface ServerSettings {
  name: string;
  groups: GroupConfig[];
  stateDir: string;
  interface: string | undefined;
  groupAddress: string;
  port: number;
  tcpPort: number;
  /** The TCP port members are told to connect to, when a forwarder or NAT sits in front of tcpPort. */
  advertisePort: number | undefined;
  concurrency: number;
  /** `--rate`: bytes per second the server uploads at most, over every member and distribution; unlimited when undefined. */
  rate: number | undefined;
  logLevel: NonNullable<ConfigFile['logLevel']>;
  logFormat: LogFormat | undefined;
  /** How long undelivered files wait for offline members; the daemon's default when undefined. */
  keepMs: number | undefined;
  /** What a member that joins later is given of earlier distributions (and so what the store keeps). */
  backlog: BacklogPolicy;
  /** How many members an open group takes beyond its configured and allowed ones. */
  maxOpenMembers: number;
  /** How long an open group keeps a member that neither connects nor sends a datagram. */
  openMemberExpiryMs: number;
  /** `--heartbeat-timeout`: a member connection silent this long is dead (member-session.ts). */
  heartbeatTimeoutMs: number;
  /** `--metrics` listen address, when the Prometheus endpoint (and the web view beside it) is wanted. */
  metrics: string | undefined;
  /** `--web-token`: required of every request to the metrics listener when set; required to listen off loopback. */
  webToken: string | undefined;
  /** The file the settings came from, if any (named or found in the search path). */
  configFile: string | undefined;
  /** True when no config file named the groups, so the server runs on the built-in ones. */
  defaultGroups: boolean;
}

type Overrides = { [K in keyof Omit<ServerSettings, 'groups' | 'defaultGroups' | 'configFile'>]?: ServerSettings[K] | undefined };

/** Merges the layers; `flags` holds only what was given on the command line or in the environment. */
export function resolveSettings(file: ConfigFile, flags: Overrides, defaultStateDir: string, configFile?: string): ServerSettings {
  const { groups, keep, openMemberExpiry, heartbeatTimeout, ...fileRest } = file;
  return {
    name: hostname().slice(0, MAX_SERVER_NAME),
    stateDir: defaultStateDir,
    interface: undefined,
    groupAddress: DEFAULT_GROUP_ADDRESS,
    port: DEFAULT_UDP_PORT,
    tcpPort: DEFAULT_TCP_PORT,
    advertisePort: undefined,
    concurrency: 8,
    rate: undefined,
    logLevel: 'info',
    logFormat: undefined,
    keepMs: keep,
    backlog: DEFAULT_BACKLOG,
    maxOpenMembers: DEFAULT_MAX_OPEN_MEMBERS,
    openMemberExpiryMs: openMemberExpiry ?? DEFAULT_OPEN_MEMBER_EXPIRY_MS,
    heartbeatTimeoutMs: heartbeatTimeout ?? HEARTBEAT_TIMEOUT_MS,
    metrics: undefined,
    webToken: undefined,
    ...definedOnly(fileRest),
    ...definedOnly(flags),
    groups: groups ?? DEFAULT_GROUPS,
    defaultGroups: groups === undefined,
    configFile,
  };
}
