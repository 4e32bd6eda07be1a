import { hostname } from 'node:os';
import { z } from 'zod';
import {
  absolutePath, definedOnly, DEFAULT_GROUP_ADDRESS, DEFAULT_TCP_PORT, DEFAULT_UDP_PORT, HEARTBEAT_TIMEOUT_MS, loadConfigFile as loadConfig,
  MAX_DESCRIPTION, MAX_SERVER_NAME, parseDuration, parseMetricsAddress, parsePeerId, parseRate, validateGroupName,
  LOG_FORMATS, LOG_LEVELS, type LogFormat,
} from '@groupcast/shared';
import { parseWebToken } from './web/access.js';
import { DEFAULT_MAX_OPEN_MEMBERS, DEFAULT_OPEN_MEMBER_EXPIRY_MS } from './control/membership.js';
import { BACKLOG_POLICIES, DEFAULT_BACKLOG, type BacklogPolicy } from './delivery/distributor.js';
import { parseHeartbeatTimeout } from './delivery/member-session.js';

/** A sanity bound on --max-open-members: past it, members.json and fan-out stop being cheap. */
export const MAX_OPEN_MEMBERS_LIMIT = 100_000;

/** A zod string checked by one of shared's validators, so the rule lives in one place. */
function validated<T>(check: (text: string) => T) {
  return z.string().transform((text, ctx) => {
    try {
      return check(text);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });
}

const peerId = validated(parsePeerId);
const groupName = validated(validateGroupName);

const port = z.number().int().min(1).max(65535);

export const groupSchema = z.strictObject({
  name: groupName,
  description: z.string().max(MAX_DESCRIPTION).default(''),
  open: z.boolean().default(false),
  members: z.array(peerId).default([]),
});

const fileSchema = z.strictObject({
  name: z.string().min(1).max(MAX_SERVER_NAME).optional(),
  groups: z
    .array(groupSchema)
    .min(1)
    .refine((groups) => new Set(groups.map((g) => g.name)).size === groups.length, 'group names must be unique')
    .optional(),
  stateDir: absolutePath.optional(),
  interface: z.string().min(1).optional(),
  groupAddress: z.string().min(1).optional(),
  port: port.optional(),
  tcpPort: z.number().int().min(0).max(65535).optional(),
  advertisePort: port.optional(),
  concurrency: z.number().int().min(1).max(1024).optional(),
  rate: validated(parseRate).optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  logFormat: z.enum(LOG_FORMATS).optional(),
  keep: validated(parseDuration).optional(),
  backlog: z.enum(BACKLOG_POLICIES).optional(),
  maxOpenMembers: z.number().int().min(1).max(MAX_OPEN_MEMBERS_LIMIT).optional(),
  openMemberExpiry: validated(parseDuration).optional(),
  heartbeatTimeout: validated(parseHeartbeatTimeout).optional(),
  metrics: validated((text) => (parseMetricsAddress(text), text)).optional(),
  webToken: validated(parseWebToken).optional(),
});

export type GroupConfig = z.output<typeof groupSchema>;
export type ConfigFile = z.output<typeof fileSchema>;

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

/** Reads and validates a server config file (JSON with comments); errors name the file and the field. */
export function loadConfigFile(path: string): Promise<ConfigFile> {
  return loadConfig(path, fileSchema);
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
