import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { access, chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';

/**
 * Real daemons as child processes, for integration tests: JSON logs on stderr are parsed so a test
 * waits on what the daemon says it did, with a timeout, never on a sleep. Every process and temporary
 * directory made here is ended by `cleanup()`.
 */
const ROOT = resolve(import.meta.dirname, '../..');
export const SERVER_BIN = join(ROOT, 'packages/server/bin/group-server.js');
export const CLIENT_BIN = join(ROOT, 'packages/client/bin/group-client.js');
const run = promisify(execFile);

/** @type {Map<string, string[]>} */
const shebangs = new Map();
/**
 * What node runs for `bin`: the V8 options of its #! line (`#!/usr/bin/env -S node --max-semi-space-size=1`),
 * then the script. The installed command and the units run the bins through that line, so daemons
 * started here with process.execPath run as they do. A script without a #! line (a test's own) gets none.
 * @param {string} bin
 */
export function nodeArgs(bin) {
  let flags = shebangs.get(bin);
  if (!flags) {
    const first = readFileSync(bin, 'utf8').split('\n', 1)[0] ?? '';
    flags = [];
    if (first.startsWith('#!')) {
      const options = /^#!\/usr\/bin\/env(?: -S)? node((?: --[\w-]+(?:=\S+)?)*)$/.exec(first)?.[1];
      if (options === undefined) throw new Error(`${bin}: the #! line does not run node: ${first}`);
      flags = options.split(' ').filter(Boolean);
    }
    shebangs.set(bin, flags);
  }
  return [...flags, bin];
}

/** @typedef {Record<string, unknown> & { msg?: string, level?: number }} LogLine */

export class Daemon {
  /** @type {LogLine[]} */ logs = [];
  /** @type {string[]} */ stdout = [];
  /** @type {Set<() => void>} */ waiters = new Set();

  /** @param {string} name @param {import('node:child_process').ChildProcess} proc */
  constructor(name, proc) {
    this.name = name;
    this.proc = proc;
    createInterface({ input: proc.stderr }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line));
      } catch {
        this.logs.push({ msg: line, raw: true });
      }
      for (const wake of this.waiters) wake();
    });
    createInterface({ input: proc.stdout }).on('line', (line) => this.stdout.push(line));
    /** @type {Promise<number | null>} */
    this.exited = new Promise((resolveExit) => proc.once('exit', (code) => {
      for (const wake of this.waiters) wake();
      resolveExit(code);
    }));
  }

  /**
   * Resolves with the first log line (seen so far or to come) that matches.
   * @param {(line: LogLine) => boolean} match
   * @returns {Promise<LogLine>}
   */
  waitForLog(match, timeoutMs = 20_000, what = 'log line') {
    return new Promise((resolveLine, reject) => {
      let seen = 0;
      const check = () => {
        for (; seen < this.logs.length; seen++) {
          const line = this.logs[seen];
          if (match(line)) {
            done();
            resolveLine(line);
            return;
          }
        }
        if (this.proc.exitCode !== null) {
          done();
          reject(new Error(`${this.name} exited (${this.proc.exitCode}) before ${what}:\n${this.tail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms:\n${this.tail()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** @param {string} msg @param {Record<string, unknown>} [fields] @param {number} [timeoutMs] */
  waitForMsg(msg, fields = {}, timeoutMs = undefined) {
    return this.waitForLog(
      (line) => line.msg === msg && Object.entries(fields).every(([k, v]) => line[k] === v),
      timeoutMs,
      `"${msg}" ${JSON.stringify(fields)}`,
    );
  }

  tail(lines = 30) {
    return this.logs.slice(-lines).map((line) => JSON.stringify(line)).join('\n');
  }

  /** @param {NodeJS.Signals} [signal] */
  async stop(signal = 'SIGTERM') {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.exited;
  }
}

/** Makes temporary directories and processes, and ends them all in cleanup(). */
export function harness() {
  /** @type {Daemon[]} */ const daemons = [];
  /** @type {string[]} */ const dirs = [];
  /** Commands from run() still running: a test that does not wait for one (a distribute left to run) has it ended here. */
  /** @type {Set<import('node:child_process').ChildProcess>} */ const running = new Set();
  return {
    /** @param {string} name */
    async dir(name) {
      const dir = await mkdtemp(join(tmpdir(), `gc-${name}-`));
      dirs.push(dir);
      return dir;
    },
    /**
     * @param {string} name @param {string} bin @param {string[]} args @param {Record<string, string>} [env]
     * @param {{ uid: number, gid: number }} [user] run as this user (the test must be root)
     */
    spawn(name, bin, args, env = {}, user = undefined) {
      const proc = spawn(process.execPath, [...nodeArgs(bin), ...args, '--log-format', 'json'], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
        ...user,
      });
      const daemon = new Daemon(name, proc);
      daemons.push(daemon);
      return daemon;
    },
    /**
     * @param {string} bin @param {string[]} args @param {Record<string, string>} [env]
     * @returns {Promise<{ code: number | null, stdout: string, stderr: string }>}
     */
    run(bin, args, timeoutMs = 60_000, env = {}) {
      return new Promise((resolveRun, reject) => {
        const proc = spawn(process.execPath, [...nodeArgs(bin), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        running.add(proc);
        let stdout = '';
        let stderr = '';
        proc.stdout.on('data', (chunk) => (stdout += chunk.toString()));
        proc.stderr.on('data', (chunk) => (stderr += chunk.toString()));
        const timer = setTimeout(() => {
          proc.kill('SIGKILL');
          reject(new Error(`${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
        }, timeoutMs);
        // 'close', not 'exit': the process may exit before its last output has been read from the pipes
        // (seen in CI: an `id` that printed the id, read as '').
        proc.once('close', (code) => {
          running.delete(proc);
          clearTimeout(timer);
          resolveRun({ code, stdout, stderr });
        });
      });
    },
    async cleanup() {
      for (const proc of running) proc.kill('SIGKILL');
      await Promise.all(daemons.map((daemon) => daemon.stop('SIGKILL')));
      await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
    },
  };
}

/**
 * The daemon's id (made on first use in its state directory).
 * @param {ReturnType<typeof harness>} h @param {string} bin @param {string} stateDir
 */
export async function idOf(h, bin, stateDir) {
  const { stdout, code, stderr } = await h.run(bin, ['id', '--state-dir', stateDir]);
  if (code !== 0) throw new Error(`${bin} id exited ${code}: ${stderr}`);
  return stdout.trim();
}

const WORKSPACES = ['shared', 'server', 'client'];
/** What a daemon needs at run time: the built code and the packages it imports, nothing from src or test. */
const RUNTIME_PARTS = ['package.json', 'dist', 'bin'];

/**
 * The built daemons, copied where another user can run them. A test that starts a process as an
 * unprivileged user (`nobody`) cannot run it from the checkout when the checkout lives in a private
 * directory (a clone under /root, mode 0700): that user may not traverse it. The copy (each
 * workspace's package.json, dist and bin, and node_modules with its @groupcast links kept relative,
 * so they point into the copy) goes into a directory of the harness opened to everyone; one copy per
 * test file. Resolves with the copy's binaries, or with why the user still cannot run them (the
 * temporary directory or node itself out of their reach), checked by running the copied CLI as them.
 *
 * @param {ReturnType<typeof harness>} h
 * @param {{ uid: number, gid: number }} user
 * @returns {Promise<{ serverBin: string, clientBin: string } | { unavailable: string }>}
 */
export async function installForUser(h, user) {
  const dir = await h.dir('install');
  /** @param {string} part a path under the checkout */
  const copy = async (part) => {
    const from = join(ROOT, part);
    if (await access(from).then(() => true, () => false)) await run('cp', ['-a', '--parents', part, dir], { cwd: ROOT });
  };
  await copy('package.json');
  await copy('node_modules');
  for (const workspace of WORKSPACES) {
    for (const part of RUNTIME_PARTS) await copy(join('packages', workspace, part));
  }
  // Whatever the umask of the clone: readable (and directories traversable) by everyone.
  await run('chmod', ['-R', 'a+rX', dir]);
  await chmod(dir, 0o755);
  const installed = { serverBin: join(dir, 'packages/server/bin/group-server.js'), clientBin: join(dir, 'packages/client/bin/group-client.js') };
  const probe = await run(process.execPath, [...nodeArgs(installed.clientBin), '--help'], { ...user, env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent' } })
    .then(() => undefined, (err) => firstError(String(err.stderr || err.message)));
  return probe === undefined ? installed : { unavailable: `uid ${user.uid} cannot run the daemons copied to ${dir}: ${probe}` };
}

/** @param {string} text stderr of a failed node process: its error line, without the stack */
function firstError(text) {
  const lines = text.trim().split('\n');
  return lines.find((line) => /^\w*Error\b/.test(line)) ?? lines[0] ?? '';
}

/**
 * Ports testPort() hands out: below the kernel's ephemeral range (32768 and up), so no outgoing
 * connection of this or another test holds one, cut into a slice per vitest worker (VITEST_POOL_ID,
 * 1 … maxWorkers), so two files that run at once never draw the same port.
 */
const TEST_PORTS = { base: 20_000, span: 12_000, slices: 4 };
/** Room above a drawn port for a test that takes a few in a row (swarm-waste: one per member). */
const TEST_PORT_RUN = 16;
/** @type {Set<number>} */
const drawnPorts = new Set();

/** A port for one test file's control plane (or metrics), so files never hear each other; never the same twice in a process. */
export function testPort() {
  const slice = TEST_PORTS.span / TEST_PORTS.slices;
  const worker = Math.max(0, (Number(process.env.VITEST_POOL_ID) || 1) - 1) % TEST_PORTS.slices;
  const runs = Math.floor(slice / TEST_PORT_RUN);
  if (drawnPorts.size >= runs) throw new Error(`testPort: all ${runs} ports of this worker's slice are taken`);
  for (;;) {
    const port = TEST_PORTS.base + worker * slice + TEST_PORT_RUN * Math.floor(Math.random() * runs);
    if (!drawnPorts.has(port)) {
      drawnPorts.add(port);
      return port;
    }
  }
}
