import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../packages/shared/src/index.js';
import { callDaemon } from '../../packages/server/src/operator/control-socket.js';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, waitUntil, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * What the server does with the file an operator names: it opens it once, refuses what is not a
 * regular file there and then (a FIFO, also one swapped in after the command checked the path; a
 * symbolic link) and keeps serving; and it stores a version of the file that existed, refusing one
 * that keeps changing while it is copied instead of delivering a torn mix as "verified".
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
/** A group nobody joined: distributing to it stores the file and answers, with nothing to send. */
const EMPTY_GROUP = 'Nobody';
/** Requests made while a path flips between a file and a FIFO: before the fix a few of them hung the daemon. */
const SWAP_ROUNDS = 12;
const ANSWER_TIMEOUT_MS = 20_000;
/** How long a helper process (path swapper, file writer) runs at most if the test does not stop it first. */
const HELPER_MAX_MS = 60_000;
let alice: Member;
let source: string;
const helpers: ChildProcess[] = [];

/** Runs a small Node program as a separate process; resolves once it printed "ready". */
async function helper(program: string, args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', program, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  helpers.push(child);
  const lines = createInterface({ input: child.stdout! });
  const [line] = await once(lines, 'line') as [string];
  expect(line).toBe('ready');
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
}

/** A distribute request straight to the control socket, as after the CLI's own check of the path. */
function distributeRaw(group: string, path: string): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer to distribute ${path} within ${ANSWER_TIMEOUT_MS} ms: the daemon hangs`)), ANSWER_TIMEOUT_MS);
  });
  return Promise.race([callDaemon(c.serverState, 'distribute', { group, files: [path] }), timeout]).finally(() => clearTimeout(timer));
}

beforeAll(async () => {
  alice = await c.member('alice', [GROUP]);
  source = await h.dir('source');
  await c.startServer([{ name: GROUP, members: [alice] }, { name: EMPTY_GROUP, members: [] }]);
  await c.startOnline([alice]);
});

afterAll(async () => {
  try {
    await Promise.all(helpers.map(stop));
  } finally {
    await h.cleanup();
  }
});

/** After a refusal the daemon still serves: a regular file reaches the member. */
async function stillServes(name: string): Promise<void> {
  const path = join(source, name);
  const sha256 = await writeRandomFile(path, 256 * 1024);
  const result = await c.distribute(GROUP, [path]);
  expect(result.code, result.stdout + result.stderr).toBe(0);
  expect(await sha256File(finalPath(alice, GROUP, name))).toBe(sha256);
}

describe('what the server opens to store', () => {
  it('refuses a FIFO and a symbolic link at once, and goes on serving', async () => {
    const fifo = join(source, 'pipe');
    execFileSync('mkfifo', [fifo]);
    await expect(distributeRaw(GROUP, fifo)).rejects.toMatchObject({ code: ErrorCode.USAGE, message: expect.stringMatching(/is not a regular file \(a FIFO\)/) });

    const target = join(source, 'target.bin');
    await writeRandomFile(target, 1024);
    await symlink(target, join(source, 'link.bin'));
    const linked = await c.distribute(GROUP, [join(source, 'link.bin')]);
    expect(linked.stderr).toMatch(/link\.bin is a symbolic link: name the file it points to/);
    expect(linked.code).toBe(2);

    await stillServes('after-fifo.bin');
  });

  it('refuses, and never blocks on, a FIFO swapped in for the file while it is being opened', async () => {
    const regular = join(source, 'swap-regular');
    const fifo = join(source, 'swap-fifo');
    const path = join(source, 'swapped.bin');
    await writeRandomFile(regular, 64 * 1024);
    execFileSync('mkfifo', [fifo]);
    await writeFile(path, '');
    const swapper = await helper(`
      const { linkSync, renameSync } = require('node:fs');
      const [regular, fifo, path, maxMs] = process.argv.slice(1);
      const deadline = Date.now() + Number(maxMs);
      process.stdout.write('ready\\n');
      for (let i = 0; i < 10000000 && Date.now() < deadline; i++) {
        linkSync(i % 2 ? fifo : regular, path + '.next');
        renameSync(path + '.next', path);
      }`, [regular, fifo, path, String(HELPER_MAX_MS)]);
    const answers = { stored: 0, fifo: 0, changed: 0 };
    try {
      for (let round = 0; round < SWAP_ROUNDS; round++) {
        try {
          await distributeRaw(EMPTY_GROUP, path);
          answers.stored++;
        } catch (err) {
          // callDaemon's error class is the built package's, not this import's: compare codes.
          const { code, message } = err as { code?: unknown; message: string };
          if (code === ErrorCode.USAGE && /is not a regular file \(a FIFO\)/.test(message)) answers.fifo++;
          // Linking the file in and out changes its inode's ctime: a change like any other.
          else if (code === ErrorCode.SOURCE_CHANGED) answers.changed++;
          else throw err;
        }
      }
    } finally {
      await stop(swapper);
    }
    expect(answers.stored + answers.fifo + answers.changed, JSON.stringify(answers)).toBe(SWAP_ROUNDS);
    await stillServes('after-swap.bin');
  });
});

describe('a file changed while it is stored', () => {
  it('is refused with "changed while being stored" rather than delivered torn; once it is left alone it is delivered whole', async () => {
    const path = join(source, 'changing.bin');
    await writeRandomFile(path, 64 * MiB);
    // Overwrites 1 MiB near the start and 1 MiB near the end, again and again, with alternating patterns.
    const writer = await helper(`
      const { openSync, writeSync } = require('node:fs');
      const [path, maxMs] = process.argv.slice(1);
      const deadline = Date.now() + Number(maxMs);
      const fd = openSync(path, 'r+');
      const patterns = [Buffer.alloc(1 << 20, 0xaa), Buffer.alloc(1 << 20, 0x55)];
      const pause = new Int32Array(new SharedArrayBuffer(4));
      process.stdout.write('ready\\n');
      for (let i = 0; i < 1000000 && Date.now() < deadline; i++) {
        const data = patterns[i % 2];
        writeSync(fd, data, 0, data.length, 5 << 20);
        writeSync(fd, data, 0, data.length, 60 << 20);
        Atomics.wait(pause, 0, 0, 1);
      }`, [path, String(HELPER_MAX_MS)]);
    let refused: Awaited<ReturnType<Cluster['distribute']>>;
    try {
      refused = await c.distribute(GROUP, [path]);
    } finally {
      await stop(writer);
    }
    expect(refused.stderr, refused.stdout).toMatch(/changing\.bin changed while being stored/);
    expect(refused.code).toBe(1);

    const sha256 = await sha256File(path);
    const delivered = await c.distribute(GROUP, [path]);
    expect(delivered.code, delivered.stdout + delivered.stderr).toBe(0);
    await waitUntil(() => sha256File(finalPath(alice, GROUP, 'changing.bin')).then((s) => s === sha256, () => false), 'changing.bin at alice');
  });
});
