import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

/**
 * Real daemons as child processes, for integration tests: JSON logs on stderr are parsed so a test
 * waits on what the daemon says it did, with a timeout, never on a sleep. Every process and temporary
 * directory made here is ended by `cleanup()`.
 */
const ROOT = resolve(import.meta.dirname, '../..');
export const SERVER_BIN = join(ROOT, 'packages/server/bin/group-server.js');
export const CLIENT_BIN = join(ROOT, 'packages/client/bin/group-client.js');

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
      const proc = spawn(process.execPath, [bin, ...args, '--log-format', 'json'], {
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
        const proc = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        proc.stdout.on('data', (chunk) => (stdout += chunk.toString()));
        proc.stderr.on('data', (chunk) => (stderr += chunk.toString()));
        const timer = setTimeout(() => {
          proc.kill('SIGKILL');
          reject(new Error(`${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
        }, timeoutMs);
        proc.once('exit', (code) => {
          clearTimeout(timer);
          resolveRun({ code, stdout, stderr });
        });
      });
    },
    async cleanup() {
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

/** A UDP port for one test file's control plane, so files never hear each other. */
export function testPort() {
  return 20_000 + Math.floor(Math.random() * 30_000);
}
