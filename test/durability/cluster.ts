import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort, type Daemon } from '../support/daemons.js';

/**
 * One server and its members as real processes on loopback (interface 127.0.0.1), for the fault
 * tests: start, kill and restart either side on the same state, and look at what is on disk.
 *
 * Use this when the members are real group-client daemons (Member: a state dir, downloads, an id from
 * `group-client id`): the config lists Members, members run with --no-peers unless asked, and the
 * server can be restarted with other flags. When the members are the test itself (identities it holds
 * the keys of, speaking raw TLS or crafted datagrams), use test/hardening/session-tools.ts instead: its
 * config lists bare ids and open groups, and it hands back the TCP port for a hostile link to dial.
 */
export type Harness = ReturnType<typeof harness>;

export const MiB = 1024 * 1024;
const PARTIAL_DIR = '.groupcast-partial';

export interface Member {
  name: string;
  state: string;
  downloads: string;
  id: string;
  groups: string[];
  daemon?: Daemon;
  /** More flags for this member's daemon (--keep-old 2). */
  args?: string[];
  /**
   * Run the member as this user, with this environment (HOME…), instead of as the test's user, from a
   * copy of the daemons that user can read (installForUser).
   */
  runAs?: { uid: number; gid: number; env: Record<string, string>; clientBin: string };
}

export interface DeliveryStatus {
  transfer: string;
  file: string;
  member: string;
  online: boolean;
  state: string;
  waiting: string;
  reason: string;
  attempts: number;
  bytesSent: number;
  bytesFromPeers: number;
}

/** Writes `size` random bytes in chunks (memory stays small) and returns their sha256. */
export async function writeRandomFile(path: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const handle = await open(path, 'w');
  try {
    for (let done = 0; done < size;) {
      const chunk = randomBytes(Math.min(8 * MiB, size - done));
      hash.update(chunk);
      await handle.write(chunk);
      done += chunk.length;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

/**
 * Polls a condition on the file system until it holds (a member's partial growing is observable only
 * there). Bounded in time; the failure says what was awaited.
 */
export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 60_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolveTick) => setTimeout(resolveTick, intervalMs));
  }
}

export function partialDir(member: Member): string {
  return join(member.downloads, PARTIAL_DIR);
}

/** Bytes in the member's partials: of one transfer when `transfer` is given, else of all it holds. */
export async function heldBytes(member: Member, transfer?: string): Promise<number> {
  let total = 0;
  const names = transfer ? [transfer] : await readdir(partialDir(member)).catch(() => []);
  for (const name of names) {
    total += await stat(join(partialDir(member), name)).then((s) => s.size, () => 0);
  }
  return total;
}

export function finalPath(member: Member, group: string, name: string): string {
  return join(member.downloads, group, name);
}

/** Records of the server's outbox journal, as on disk. */
export async function journal(serverState: string): Promise<Array<{ kind: string; delivery?: { transfer: string; member: string; state: string } }>> {
  const text = await readFile(join(serverState, 'outbox.jsonl'), 'utf8');
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { kind: string });
}

/** Resolves with the next log line like this that the daemon writes from now on (not one already written). */
export function waitForNew(daemon: Daemon, msg: string, fields: Record<string, unknown>, timeoutMs = 20_000) {
  const before = new Set(daemon.logs);
  return daemon.waitForLog(
    (line) => !before.has(line) && line.msg === msg && Object.entries(fields).every(([k, v]) => line[k] === v),
    timeoutMs,
    `a new "${msg}" ${JSON.stringify(fields)}`,
  );
}

/** Small tmpfs file systems for a test file (root only): a disk that fills up. */
export class Mounts {
  private readonly dirs: string[] = [];

  constructor(private readonly h: Harness) {}

  async tmpfs(size: string): Promise<string> {
    const dir = join(await this.h.dir('tmpfs'), 'mnt');
    await mkdir(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
    this.dirs.push(dir);
    return dir;
  }

  /**
   * For afterAll: kills the daemons that may hold files on the mounts (a busy mount cannot be
   * unmounted), unmounts every one whatever happened, then ends the harness.
   */
  async cleanup(holders: Array<Daemon | undefined>): Promise<void> {
    try {
      await Promise.all(holders.map((daemon) => daemon?.stop('SIGKILL')));
    } finally {
      for (const dir of this.dirs.splice(0)) execFileSync('umount', [dir]);
      await this.h.cleanup();
    }
  }
}

export class Cluster {
  readonly port = String(testPort());
  readonly network = ['--interface', '127.0.0.1', '--port', this.port];
  serverState = '';
  serverId = '';
  config = '';
  server: Daemon | undefined;
  private baseArgs: string[] = [];
  private extraArgs: string[] = [];
  private restarts = 0;

  /**
   * `peers: false` (the default here) starts members with --no-peers: these tests pin down the server's
   * own stream (offsets, resends), which peer-assisted delivery would change; test/peers covers the swarm.
   */
  constructor(readonly h: Harness, private readonly options: { peers?: boolean } = {}) {}

  async member(name: string, groups: string[], downloads?: string): Promise<Member> {
    const state = await this.h.dir(`${name}-state`);
    return { name, state, downloads: downloads ?? await this.h.dir(`${name}-dl`), id: await idOf(this.h, CLIENT_BIN, state), groups };
  }

  /** Writes the config (groups and the ids allowed in each) and starts the server (on `stateDir`, or a new directory). */
  async startServer(groups: Array<{ name: string; members: Member[] }>, extra: string[] = [], stateDir?: string): Promise<Daemon> {
    this.serverState = stateDir ?? await this.h.dir('server');
    this.serverId = await idOf(this.h, SERVER_BIN, this.serverState);
    this.config = join(this.serverState, 'config.json');
    await writeFile(this.config, JSON.stringify({
      groups: groups.map((g) => ({ name: g.name, members: g.members.map((m) => m.id) })),
    }));
    this.baseArgs = ['--config', this.config, '--state-dir', this.serverState, ...this.network];
    return this.restartServer(['--tcp-port', '0', ...extra]);
  }

  /** Starts the server again on the same state (after a stop or a kill), with new extra flags if given. */
  async restartServer(extra?: string[]): Promise<Daemon> {
    if (extra) this.extraArgs = extra;
    const server = this.h.spawn(`server#${this.restarts++}`, SERVER_BIN, [...this.baseArgs, ...this.extraArgs]);
    this.server = server;
    await server.waitForMsg('group-server started');
    return server;
  }

  startMember(member: Member): Daemon {
    member.daemon = this.h.spawn(member.name, member.runAs?.clientBin ?? CLIENT_BIN, [
      ...member.groups.flatMap((g) => ['--join', g]),
      '--server-id', this.serverId, '--state-dir', member.state, '--downloads', member.downloads, '--name', member.name,
      ...this.network, ...(this.options.peers ? [] : ['--no-peers']), ...(member.args ?? []),
    ], member.runAs?.env, member.runAs && { uid: member.runAs.uid, gid: member.runAs.gid });
    return member.daemon;
  }

  /** Resolves when the current server says the member is online. */
  async online(member: Member, timeoutMs = 20_000): Promise<void> {
    await this.server!.waitForMsg('member online', { member: member.id }, timeoutMs);
  }

  /** Starts these members and resolves when the server has seen each of them online. */
  async startOnline(members: Member[]): Promise<void> {
    for (const member of members) this.startMember(member);
    for (const member of members) await this.online(member);
  }

  /**
   * The common setup: members of these names, each in `group` alone, the server with that one group
   * (and `extra` flags), every member started and online. The members come back in the order named.
   */
  async startGroup<const Names extends readonly string[]>(group: string, names: Names, extra: string[] = []): Promise<{ -readonly [K in keyof Names]: Member }> {
    const members: Member[] = [];
    for (const name of names) members.push(await this.member(name, [group]));
    await this.startServer([{ name: group, members }], extra);
    await this.startOnline(members);
    return members as { -readonly [K in keyof Names]: Member };
  }

  distribute(group: string, files: string[], extra: string[] = [], timeoutMs = 120_000) {
    return this.h.run(SERVER_BIN, ['distribute', group, ...files, '--state-dir', this.serverState, ...extra], timeoutMs);
  }

  async deliveries(): Promise<DeliveryStatus[]> {
    const { code, stdout, stderr } = await this.h.run(SERVER_BIN, ['status', '--json', '--state-dir', this.serverState]);
    expect(code, stderr).toBe(0);
    const status = JSON.parse(stdout) as { transfers: Array<{ deliveries: DeliveryStatus[] }> };
    return status.transfers.flatMap((t) => t.deliveries);
  }

  async statusText(): Promise<string> {
    const { code, stdout, stderr } = await this.h.run(SERVER_BIN, ['status', '--state-dir', this.serverState]);
    expect(code, stderr).toBe(0);
    return stdout;
  }

  /** The transfer id the server logged for a distributed file name. */
  async transferOf(name: string): Promise<string> {
    const line = await this.server!.waitForMsg('distribution recorded', { file: name });
    return String(line.transfer);
  }
}
