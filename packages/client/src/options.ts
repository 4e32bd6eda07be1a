import { hostname, homedir } from 'node:os';
import { join } from 'node:path';
import {
  codeIsForServer, DEFAULT_GROUP_ADDRESS, DEFAULT_UDP_PORT, ErrorCode, GroupcastError, integerOption, MAX_SERVER_NAME, familyOf,
  parseHostPort, parseJoinCode, parseMetricsAddress, parsePeerId, resolveInterface, truncateUtf8, validateGroupName,
  type Family, type JoinCode, type Logger, type MulticastInterface, type Peer, type PeerId,
} from '@groupcast/shared';
import { DEFAULT_KEEP_OLD, MAX_KEEP_OLD } from './receive/versions.js';

/** What a caller (the CLI or a test) asks of a member daemon; everything but the directories has a default. */
export interface ClientOptions {
  stateDir: string;
  downloads: string;
  /** Groups to join. */
  groups?: string[] | undefined;
  /** A join code from `group-server invite`: proven (never sent) in every JOIN; pins the server that issued it. */
  code?: string | undefined;
  /** Multicast interface: an address or an interface name. */
  interface?: string | undefined;
  groupAddress?: string | undefined;
  /** UDP port of the control plane. */
  port?: number | undefined;
  /** `HOST[:PORT]`: also send LIST and JOIN unicast there, for networks where multicast does not reach. */
  server?: string | undefined;
  /** The server id to trust; replaces a stored pin. */
  serverId?: string | undefined;
  /** Pin the first server seen, when nothing is pinned yet. */
  trustFirstServer?: boolean | undefined;
  /** Sent in HELLO; defaults to the host name. */
  name?: string | undefined;
  log?: Logger | undefined;
  clock?: (() => number) | undefined;
  /** A data connection silent this long is dropped (tests shorten it). */
  heartbeatTimeoutMs?: number | undefined;
  /** A command (`sh -c`) to run after each verified delivery; see on-receive.ts. */
  onReceive?: { command: string; timeoutMs: number; concurrency: number } | undefined;
  /** `PORT` or `ADDR:PORT` for the Prometheus endpoint; off when undefined. */
  metrics?: string | undefined;
  /** The peer port (0: any free one); undefined: no peer-assisted delivery, every file from the server. */
  peerPort?: number | undefined;
  /** `--peer-rate`: bytes per second this member uploads to its peers at most; unlimited when undefined. */
  peerRate?: number | undefined;
  /** `--keep-old`: previous versions of a replaced file kept for rollback (versions.ts); 0 when undefined. */
  keepOld?: number | undefined;
}

export interface ResolvedOptions {
  stateDir: string;
  downloads: string;
  groups: string[];
  code: JoinCode | undefined;
  iface: MulticastInterface;
  groupAddress: string;
  port: number;
  unicast: Peer | undefined;
  serverId: PeerId | undefined;
  trustFirstServer: boolean;
  name: string;
  onReceive: { command: string; timeoutMs: number; concurrency: number } | undefined;
  metrics: { host: string; port: number } | undefined;
  peerPort: number | undefined;
  peerRate: number | undefined;
  keepOld: number;
}

function usage(message: string, cause?: unknown): GroupcastError {
  return new GroupcastError(ErrorCode.USAGE, message, cause === undefined ? undefined : { cause });
}

/** The download directory when none is given: the XDG one if the desktop names it, else ~/Downloads, each with a groupcast folder. */
export function defaultDownloadsDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_DOWNLOAD_DIR || join(homedir(), 'Downloads'), 'groupcast');
}

export const parsePort = integerOption('--port', 1, 65535);
export const parseKeepOld = integerOption('--keep-old', 0, MAX_KEEP_OLD);

/** "3s", "500ms", "2m" or a bare number of seconds: the one parser both daemons use. */
export { parseDuration } from '@groupcast/shared';

/** Checks every flag-derived value up front, so a mistake is a USAGE error before anything binds. */
export function resolveOptions(options: ClientOptions): ResolvedOptions {
  const groups = [...new Set(options.groups ?? [])].map((group) => {
    try {
      return validateGroupName(group);
    } catch (err) {
      throw usage(`--join: ${(err as Error).message}`, err);
    }
  });
  let code: JoinCode | undefined;
  if (options.code !== undefined) {
    try {
      code = parseJoinCode(options.code);
    } catch (err) {
      throw usage(`--code: ${(err as Error).message}`, err);
    }
    if (options.trustFirstServer) throw usage('--code pins the server that issued it; leave out --trust-first-server');
  }
  const groupAddress = options.groupAddress ?? DEFAULT_GROUP_ADDRESS;
  const port = parsePort(options.port ?? DEFAULT_UDP_PORT);
  let family: Family;
  try {
    family = familyOf(groupAddress);
  } catch (err) {
    throw usage(`--group-address: ${(err as Error).message}`, err);
  }
  let iface: MulticastInterface;
  try {
    iface = resolveInterface(options.interface, family);
  } catch (err) {
    // A named interface that does not exist is a flag mistake; a host with no interface at all is not.
    if (options.interface !== undefined) throw usage(`--interface: ${(err as Error).message}`, err);
    throw err;
  }
  let unicast: Peer | undefined;
  if (options.server !== undefined) {
    const { host, port: serverPort } = parseHostPort(options.server, port);
    unicast = { address: host, port: serverPort };
  }
  let serverId: PeerId | undefined;
  if (options.serverId !== undefined) {
    try {
      serverId = parsePeerId(options.serverId);
    } catch (err) {
      throw usage(`--server-id: ${(err as Error).message}`, err);
    }
    if (code && !codeIsForServer(code, serverId)) throw usage(`--code is for a server whose id starts ${code.serverPrefix}, not ${serverId}`);
  }
  const name = options.name ?? truncateUtf8(hostname(), MAX_SERVER_NAME);
  if (Buffer.byteLength(name) > MAX_SERVER_NAME) throw usage(`--name is longer than ${MAX_SERVER_NAME} bytes`);
  return {
    stateDir: options.stateDir,
    downloads: options.downloads,
    groups,
    code,
    iface,
    groupAddress,
    port,
    unicast,
    serverId,
    trustFirstServer: options.trustFirstServer ?? false,
    name,
    onReceive: options.onReceive?.command ? options.onReceive : undefined,
    metrics: options.metrics === undefined ? undefined : parseMetricsAddress(options.metrics),
    peerPort: options.peerPort,
    peerRate: options.peerRate,
    keepOld: parseKeepOld(options.keepOld ?? DEFAULT_KEEP_OLD),
  };
}
