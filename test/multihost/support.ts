// What the multi-host tests share: real group-server / group-client processes started inside the
// hosts of a namespace topology (test/harness/netns.ts), with their JSON logs parsed by the same
// Daemon class the loopback tests use, so every wait is on something a daemon said.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { netnsAvailable, type ExecResult, type Host } from '../harness/netns.js';
import { CLIENT_BIN, Daemon, nodeArgs, SERVER_BIN } from '../support/daemons.js';

export { CLIENT_BIN, SERVER_BIN };
export { listFiles, sha256File } from '../support/files.js';

/** Resolves once per file: whether topologies can be built; when not, says so in one line. */
export async function multihostAvailable(): Promise<boolean> {
  const availability = await netnsAvailable();
  if (!availability.ok) console.warn(`[multihost] skipped: ${availability.reason}`);
  return availability.ok;
}

/** A member host and its daemon's directories. */
export interface Member {
  host: Host;
  state: string;
  downloads: string;
  id: string;
  daemon?: Daemon;
}

/** Temporary directories and daemons of one test file, all ended by cleanup(). */
export class Lan {
  private readonly dirs: string[] = [];
  private readonly daemons: Daemon[] = [];

  async dir(name: string): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), `gc-mh-${name}-`));
    this.dirs.push(dir);
    return dir;
  }

  /** Starts a daemon (or any long-running command of a binary) inside a host. */
  spawn(host: Host, name: string, bin: string, args: readonly string[]): Daemon {
    const proc = host.spawn(process.execPath, [...nodeArgs(bin), ...args, '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const daemon = new Daemon(name, proc);
    this.daemons.push(daemon);
    return daemon;
  }

  /** A member on this host: its state and download directories, and its id. */
  async member(host: Host): Promise<Member> {
    const state = await this.dir(`${host.name}-state`);
    return { host, state, downloads: await this.dir(`${host.name}-dl`), id: await idOf(this, host, CLIENT_BIN, state) };
  }

  /** Runs a command of a binary to completion inside a host. */
  run(host: Host, bin: string, args: readonly string[], timeoutMs = 30_000): Promise<ExecResult> {
    return host.exec(process.execPath, [...nodeArgs(bin), ...args], { timeoutMs });
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.daemons.map((daemon) => daemon.stop('SIGKILL')));
    await Promise.all(this.dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  }
}

/** The daemon's id (made on first use in its state directory). */
export async function idOf(lan: Lan, host: Host, bin: string, stateDir: string): Promise<string> {
  const result = await lan.run(host, bin, ['id', '--state-dir', stateDir]);
  expect(result.code, result.stderr).toBe(0);
  return result.stdout.trim();
}

/** Writes `bytes` random bytes and returns their sha256. */
export async function randomFile(path: string, bytes: number): Promise<string> {
  const content = randomBytes(bytes);
  await writeFile(path, content);
  return createHash('sha256').update(content).digest('hex');
}

/** `distribute --json` against the server's control socket (a Unix socket: reachable from outside the host). */
export async function distribute(
  lan: Lan,
  host: Host,
  stateDir: string,
  group: string,
  files: string[],
  timeoutMs = 60_000,
): Promise<{ code: number | null; summary: DistributeSummary }> {
  const result = await lan.run(host, SERVER_BIN, ['distribute', group, ...files, '--state-dir', stateDir, '--json'], timeoutMs);
  let summary: DistributeSummary;
  try {
    summary = JSON.parse(result.stdout) as DistributeSummary;
  } catch {
    throw new Error(`distribute printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
  return { code: result.code, summary };
}

export interface DistributeSummary {
  exitCode: number;
  transfers: Array<{ id: string; sha256: string; size: number }>;
  deliveries: Array<{ member: string; state: string; reason: string; transfer: string }>;
  /** How often it lost the daemon and re-attached (a daemon restarted under it). */
  reconnects: number;
}
