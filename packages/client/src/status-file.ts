import type { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  errnoCode, ErrorCode, GroupcastError, NAK_REASON_NAMES, OUTCOME_NAMES, processExists, writeFileAtomic, type Logger, type PeerId,
} from '@groupcast/shared';
import type { ClientEvents } from './daemon.js';
import type { Refusal } from './discovery/membership.js';
import type { SwarmCounters } from './peer/swarm.js';
import { parseReceivedLog, RECEIVED_LOG, type ReceivedRecord } from './receive/received-log.js';

export const STATUS_FILE = 'status.json';
const WRITE_DELAY_MS = 200;
const RECENT_PROBLEMS = 10;
/** The peer figures change with every piece: they are looked at this often and written when they moved. */
const PEERS_REFRESH_MS = 1_000;

/** Peer-assisted delivery as status shows it: the port, links now, bytes by source since start (SwarmCounters). */
export interface PeerStatus extends SwarmCounters {
  port: number;
  links: number;
}

/** 'revoked': refused as not authorized after this daemon had joined the group. */
export type GroupState = 'joining' | 'joined' | 'refused' | 'revoked';

/** A group as status shows it. `reason` is the server's text for a refusal ('' otherwise), as in version 1. */
export interface GroupStatus {
  name: string;
  state: GroupState;
  reason: string;
  /** When the group entered this state; absent in files written before refusals were shown. */
  since?: number;
  /** Why the server refused the group (NAK reason name and text, when first heard), or null. */
  refusal?: { reason: string; message: string; at: number } | null;
}

/** What the daemon says about itself in `<stateDir>/status.json`. Times are ms since the epoch. */
export interface ClientStatus {
  version: 1;
  pid: number;
  id: PeerId;
  name: string;
  startedAt: number;
  updatedAt: number;
  /** False once the daemon has stopped cleanly. */
  running: boolean;
  downloads: string;
  server: { id: PeerId; name: string | null; address: string; tcpPort: number } | null;
  /** When the data connection came up, or null while there is none. */
  connectedSince: number | null;
  groups: GroupStatus[];
  /** Why the daemon stopped by itself (every group refused), or null; absent in older files. */
  stopReason?: string | null;
  /** The last few transfers that did not arrive (declined or failed), newest last. */
  problems: Array<{ time: number; transfer: string; group: string; name: string; outcome: string; message: string }>;
  /** Null when this member does not take part in peer-assisted delivery (--no-peers); absent in files of older versions. */
  peers?: PeerStatus | null;
  /**
   * Peers dropped for sending a piece that does not match the manifest: how many since start, and the
   * last few, newest last. Absent in files written before peer-assisted delivery.
   */
  badPeers?: { count: number; recent: Array<{ time: number; peer: PeerId; transfer: string; group: string; name: string; piece: number }> };
}

/**
 * The member daemon has no control socket; it keeps `status.json` current instead (written
 * atomically, a few times a second at most), and `group-client status` reads it with the received
 * log. That needs no listener, and still answers when the daemon is down.
 */
export class StatusFile {
  readonly path: string;
  private readonly status: ClientStatus;
  private timer: NodeJS.Timeout | undefined;
  private peersTimer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly options: {
      stateDir: string; id: PeerId; name: string; downloads: string; groups: string[]; log: Logger;
      /** The peer figures now; undefined without peer-assisted delivery. */
      peers?: (() => PeerStatus) | undefined;
    },
  ) {
    this.path = join(options.stateDir, STATUS_FILE);
    const now = Date.now();
    this.status = {
      version: 1, pid: process.pid, id: options.id, name: options.name, startedAt: now, updatedAt: now, running: true,
      downloads: options.downloads, server: null, connectedSince: null,
      groups: options.groups.map((name) => ({ name, state: 'joining', reason: '', since: now, refusal: null })),
      problems: [],
      peers: options.peers?.() ?? null,
      badPeers: { count: 0, recent: [] },
      stopReason: null,
    };
  }

  private refreshPeers(): void {
    const peers = this.options.peers?.();
    if (!peers) return;
    if (JSON.stringify(peers) === JSON.stringify(this.status.peers)) return;
    this.status.peers = peers;
    this.changed();
  }

  /** Follows the daemon's events; writes the first snapshot now. */
  watch(client: EventEmitter<ClientEvents>): Promise<void> {
    const group = (name: string, state: GroupState, refusal?: Refusal): void => {
      const entry = this.status.groups.find((g) => g.name === name);
      if (!entry) return;
      if (entry.state !== state) entry.since = refusal?.at ?? Date.now();
      entry.state = state;
      entry.reason = refusal?.message ?? '';
      entry.refusal = refusal ? { reason: NAK_REASON_NAMES[refusal.reason], message: refusal.message, at: refusal.at } : null;
      this.changed();
    };
    client.on('server', (server) => {
      this.status.server = { id: server.id, name: server.name ?? null, address: server.address, tcpPort: server.tcpPort };
      this.changed();
    });
    client.on('joined', (name) => group(name, 'joined'));
    client.on('refused', (name, refusal) => group(name, refusal.revoked ? 'revoked' : 'refused', refusal));
    client.on('stranded', () => {
      this.status.stopReason = 'every group was refused by the server';
      this.changed();
    });
    client.on('connected', (_server, name) => {
      this.status.connectedSince = Date.now();
      // HELLO names the server; replies to LIST do not, and ANNOUNCE may not have come yet.
      if (this.status.server && name) this.status.server.name = name;
      this.changed();
    });
    client.on('disconnected', () => {
      this.status.connectedSince = null;
      this.changed();
    });
    const problem = (event: { transfer: string; group: string; name: string; outcome: number; message: string }): void => {
      const { transfer, group: groupName, name, message } = event;
      this.status.problems.push({ time: Date.now(), transfer, group: groupName, name, outcome: OUTCOME_NAMES[event.outcome as keyof typeof OUTCOME_NAMES] ?? String(event.outcome), message });
      this.status.problems.splice(0, Math.max(0, this.status.problems.length - RECENT_PROBLEMS));
      this.changed();
    };
    client.on('declined', problem);
    client.on('failed', problem);
    if (this.options.peers) {
      this.peersTimer = setInterval(() => this.refreshPeers(), PEERS_REFRESH_MS);
      this.peersTimer.unref();
    }
    client.on('badPeer', ({ peer, transfer, group: groupName, name, piece }) => {
      const badPeers = (this.status.badPeers ??= { count: 0, recent: [] });
      badPeers.count++;
      badPeers.recent.push({ time: Date.now(), peer, transfer, group: groupName, name, piece });
      badPeers.recent.splice(0, Math.max(0, badPeers.recent.length - RECENT_PROBLEMS));
      this.changed();
    });
    return this.write();
  }

  private changed(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.write();
    }, WRITE_DELAY_MS);
  }

  private write(): Promise<void> {
    this.status.updatedAt = Date.now();
    const text = `${JSON.stringify(this.status, null, 2)}\n`;
    this.writing = this.writing
      .then(() => writeFileAtomic(this.path, text))
      .catch((err: unknown) => this.options.log.warn({ err, path: this.path }, 'cannot write the status file'));
    return this.writing;
  }

  /** Records a clean stop. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    clearInterval(this.peersTimer);
    this.timer = undefined;
    this.status.running = false;
    this.status.connectedSince = null;
    await this.write();
  }
}

export interface StatusReport {
  status: ClientStatus;
  /** Running now: the file says so and its process exists (a crash leaves `running: true` behind). */
  running: boolean;
  /** The most recent received files, newest first. */
  recent: ReceivedRecord[];
  received: number;
}

/** What `group-client status` shows: status.json, checked against the process table, and the received log's tail. */
export async function readStatus(stateDir: string, recentCount: number): Promise<StatusReport> {
  const path = join(stateDir, STATUS_FILE);
  let status: ClientStatus;
  try {
    status = JSON.parse(await readFile(path, 'utf8')) as ClientStatus;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new GroupcastError(ErrorCode.NOT_FOUND, `no status in ${stateDir}: the member daemon has not run with this --state-dir (start it with "group-client --join <group> …")`, { cause: err });
    }
    throw new GroupcastError(ErrorCode.STATE_DIR, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const log = await readFile(join(stateDir, RECEIVED_LOG), 'utf8').catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return '';
    throw new GroupcastError(ErrorCode.STATE_DIR, `cannot read the received log in ${stateDir}`, { cause: err });
  });
  const { records } = parseReceivedLog(log);
  return {
    status,
    running: status.running && processExists(status.pid),
    recent: records.slice(-recentCount).reverse(),
    received: records.length,
  };
}
