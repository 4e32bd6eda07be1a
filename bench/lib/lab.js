// The benchmarks' test bench: a namespace topology (the test harness, compiled by `tsc -b`), real
// daemons started inside its hosts, the fan-out baselines, and what /proc says about each process.
// Every process and directory made here is ended by close(); every wait has a timeout.

import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import { createTopology, netnsAvailable, waitForLine } from '../../test/harness/dist/netns.js';
import { CLIENT_BIN, Daemon, nodeArgs, SERVER_BIN } from '../../test/support/daemons.js';

export { CLIENT_BIN, SERVER_BIN };
export const FANOUT = resolve(import.meta.dirname, '../baselines/fanout.js');
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux
/** Starting eight daemons at once on two busy cores can take a while. */
const SPAWN_WAIT_MS = 60_000;

/** CPU seconds in user and in system mode the process (all its threads) has used so far, from /proc/<pid>/stat. */
export async function cpuTimes(pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / CLOCK_TICKS_PER_SECOND, system: Number(fields[12]) / CLOCK_TICKS_PER_SECOND };
}

export async function cpuSeconds(pid) {
  const { user, system } = await cpuTimes(pid);
  return user + system;
}

/** Peak resident set size in bytes (VmHWM), from /proc/<pid>/status. */
export async function peakRss(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kib === undefined) throw new Error(`no VmHWM for pid ${pid}`);
  return Number(kib) * 1024;
}

/** Writes `bytes` of random data in 1 MiB pieces (memory stays flat whatever the size). */
export async function writeRandomFile(path, bytes) {
  const out = createWriteStream(path);
  for (let written = 0; written < bytes; written += MiB) {
    if (!out.write(randomBytes(Math.min(MiB, bytes - written)))) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

/** The server's view of one transfer's deliveries: bytes it sent and bytes the members took from peers. */
export async function deliveryBytes(lab, group, transfer) {
  const result = await lab.run(group.serverHost, SERVER_BIN, ['status', '--json', '--state-dir', group.state]);
  if (result.code !== 0) throw new Error(`status exited ${result.code}: ${result.stderr}`);
  const deliveries = JSON.parse(result.stdout).transfers.find((t) => t.id === transfer)?.deliveries ?? [];
  return {
    serverBytes: deliveries.reduce((sum, d) => sum + d.bytesSent, 0),
    peerBytes: deliveries.reduce((sum, d) => sum + (d.bytesFromPeers ?? 0), 0),
  };
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** A fan-out receiver's one JSON line of results, printed after its last connection. */
async function receiverResult(child) {
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s) => (out += s));
  await once(child, 'close');
  return JSON.parse(out);
}

/**
 * One benchmark run's hosts and scratch space: `work` is on disk (server state, source files),
 * `recv` is where receivers write (tmpfs by default, so that the disk does not hide the software).
 */
export class Lab {
  static async open({ hosts, work, recv }) {
    const availability = await netnsAvailable();
    if (!availability.ok) throw new Error(`benchmarks need network namespaces: ${availability.reason}`);
    const topo = await createTopology({ hosts, ipv6: false, prefix: 'bench' });
    const lab = new Lab(topo, work, recv);
    await mkdir(work, { recursive: true });
    await mkdir(recv, { recursive: true });
    return lab;
  }

  constructor(topo, work, recv) {
    this.topo = topo;
    this.hosts = topo.hosts;
    this.work = work;
    this.recv = recv;
    this.daemons = new Set();
  }

  /** A daemon (JSON logs on stderr) inside a host. */
  spawn(host, name, bin, args) {
    // BENCH_CPU_PROF=DIR: the server and the first member write V8 CPU profiles there when they exit
    // (summarise with bench/lib/profile-summary.js, or open in Chrome DevTools).
    const profiled = process.env.BENCH_CPU_PROF && (name === 'server' || name === 'h1');
    const profile = profiled ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF, '--cpu-prof-name', `${name}-${Date.now()}.cpuprofile`] : [];
    const proc = host.spawn(process.execPath, [...profile, ...nodeArgs(bin), ...args, '--log-format', 'json'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const daemon = new Daemon(name, proc);
    this.daemons.add(daemon);
    daemon.exited.then(() => this.daemons.delete(daemon));
    return daemon;
  }

  /** A command inside a host, to completion. */
  async run(host, bin, args, timeoutMs = 600_000) {
    return host.exec(process.execPath, [...nodeArgs(bin), ...args], { timeoutMs });
  }

  async close() {
    await Promise.all([...this.daemons].map((d) => d.stop('SIGKILL')));
    await this.topo.destroy();
    await rm(this.recv, { recursive: true, force: true });
    await rm(this.work, { recursive: true, force: true });
  }

  /**
   * A server on hosts[0] with one open group, `Bench`, and `members` clients on the next hosts, all
   * joined and online. Each member gets a fresh download directory under `recv`; `clientArgs` and
   * `serverArgs` are added to the daemons' command lines; `clientLogLevel` is the members' (warn: their
   * logs cost CPU; debug for traces).
   */
  async startGroup(name, members, { clientArgs = [], serverArgs = [], clientLogLevel = 'warn' } = {}) {
    const server = this.hosts[0];
    const state = join(this.work, `${name}-server`);
    await mkdir(state, { recursive: true });
    const config = join(state, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Bench', open: true }] }));
    const id = (await this.run(server, SERVER_BIN, ['id', '--state-dir', state])).stdout.trim();
    const serverDaemon = this.spawn(server, 'server', SERVER_BIN, [
      '--config', config, '--state-dir', state, '--interface', server.ipv4, '--name', 'bench', ...serverArgs,
    ]);
    await serverDaemon.waitForMsg('group-server started', {}, SPAWN_WAIT_MS);
    const clients = [];
    for (const host of this.hosts.slice(1, 1 + members)) {
      const clientState = join(this.work, `${name}-${host.name}`);
      const downloads = join(this.recv, `${name}-${host.name}`);
      const daemon = this.spawn(host, host.name, CLIENT_BIN, [
        '--join', 'Bench', '--server-id', id, '--state-dir', clientState, '--downloads', downloads, '--interface', host.ipv4,
        '--log-level', clientLogLevel, ...clientArgs,
      ]);
      clients.push({ host, daemon, downloads, state: clientState });
    }
    for (const c of clients) c.id = (await serverDaemon.waitForLog((l) => l.msg === 'member online' && l.address === c.host.ipv4, SPAWN_WAIT_MS, `${c.host.name} online`)).member;
    return { server: serverDaemon, serverHost: server, state, id, clients };
  }

  /** Ends a group started by startGroup and deletes what it received and stored. */
  async endGroup(group) {
    await Promise.all([group.server, ...group.clients.map((c) => c.daemon)].map((d) => d.stop('SIGTERM')));
    await Promise.all([group.state, ...group.clients.flatMap((c) => [c.downloads, c.state])].map((d) => rm(d, { recursive: true, force: true })));
  }

  /**
   * The fan-out baseline (bench/baselines/fanout.js): receivers on hosts[1..n], the sender on
   * hosts[0]. Returns the sender's JSON line; received files are deleted afterwards. With `{ tar: true }`
   * `file` is a directory, sent as `tar -c` and unpacked by `tar -x` on each receiver.
   */
  async fanout(mode, file, n, { tar = false } = {}) {
    const port = 47800;
    const receivers = [];
    for (const host of this.hosts.slice(1, 1 + n)) {
      const out = join(this.recv, `fanout-${mode}-${host.name}`);
      await mkdir(out, { recursive: true });
      const child = host.spawn(process.execPath, [FANOUT, 'receive', '--mode', mode, '--port', String(port), '--out', out, '--fsync', '--host', host.ipv4, ...(tar ? ['--untar'] : [])], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const answer = receiverResult(child);
      answer.catch(() => undefined); // awaited after the sender; a receiver killed early is reported there
      const errors = [];
      child.stderr.setEncoding('utf8').on('data', (text) => errors.push(text));
      receivers.push({ host, child, out, answer, errors });
    }
    try {
      await Promise.all(receivers.map((r) => waitForLine(r.child, /listening/, { stream: 'stderr', timeoutMs: SPAWN_WAIT_MS })));
      const result = await this.run(this.hosts[0], FANOUT, [
        'send', '--mode', mode, tar ? '--tar' : '--file', file, '--receivers', receivers.map((r) => `${r.host.ipv4}:${port}`).join(','),
      ]);
      if (result.code !== 0) {
        const said = receivers.map((r) => `${r.host.name}: ${r.errors.join('').slice(0, 1000)}`).join('\n');
        throw new Error(`fanout ${mode} failed (${result.code}): ${result.stderr}\nreceivers:\n${said}`);
      }
      const answers = await Promise.all(receivers.map((r) => r.answer));
      // A tar child's CPU (tarCpuSeconds) is its receiver's too.
      return { ...JSON.parse(result.stdout), receiversCpuSeconds: answers.reduce((sum, a) => sum + a.cpuSeconds + (a.tarCpuSeconds ?? 0), 0) };
    } finally {
      for (const r of receivers) r.child.kill('SIGKILL');
      await Promise.all(receivers.map((r) => rm(r.out, { recursive: true, force: true })));
    }
  }
}
