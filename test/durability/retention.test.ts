import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, SERVER_BIN } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, waitForNew, waitUntil, writeRandomFile, type Member } from './cluster.js';

/**
 * Retention that follows the deliveries, and the backlog a member joining later gets. alice and bob
 * are in the group from the start; carolAll, carolLatest and carolNone are allowed from the start but
 * join only later, each under another --backlog policy. The server is restarted between policies on
 * the same state, from the widest to the narrowest, so each restart's own retention pass shows what
 * the new policy no longer keeps.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
const DAY = 24 * 3600 * 1000;
let alice: Member;
let bob: Member;
let carolAll: Member;
let carolLatest: Member;
let carolNone: Member;
let source: string;
const files = {} as Record<'v1' | 'v2' | 'notes' | 'fresh', { path: string; sha256: string }>;

beforeAll(async () => {
  [alice, bob, carolAll, carolLatest, carolNone] = await Promise.all(
    ['alice', 'bob', 'carolAll', 'carolLatest', 'carolNone'].map((name) => c.member(name, [GROUP])),
  ) as [Member, Member, Member, Member, Member];
  source = await h.dir('source');
  await c.startServer([{ name: GROUP, members: [alice, bob, carolAll, carolLatest, carolNone] }], ['--backlog', 'all']);
  await c.startOnline([alice, bob]);
});

afterAll(() => h.cleanup());

/** Writes a random file as `name` in its own folder of the source (two versions of one name need two). */
async function write(key: keyof typeof files, dir: string, name: string, size: number): Promise<string> {
  const folder = join(source, dir);
  await mkdir(folder, { recursive: true });
  const path = join(folder, name);
  files[key] = { path, sha256: await writeRandomFile(path, size) };
  return path;
}

async function stored(): Promise<string[]> {
  return (await readdir(join(c.serverState, 'store'))).filter((name) => /^[0-9a-f]{64}$/.test(name));
}

async function distributeOk(path: string): Promise<string> {
  const result = await c.distribute(GROUP, [path]);
  expect(result.code, result.stdout + result.stderr).toBe(0);
  return c.transferOf(path.split('/').pop()!);
}

async function restart(extra: string[], online: Member[]): Promise<void> {
  await c.server!.stop('SIGTERM');
  await c.restartServer(['--tcp-port', '0', ...extra]);
  for (const m of online) await c.online(m, 30_000);
}

const received = (member: Member): unknown[] => member.daemon!.logs.filter((l) => l.msg === 'received').map((l) => l.file);

describe('backlog policies for a member that joins later, and retention that follows them', () => {
  it('--backlog all: the late joiner is offered every unexpired file, older versions of a name first', async () => {
    await distributeOk(await write('v1', 'one', 'app.bin', MiB));
    // Their users delete the old version, so the new one is no name clash for them.
    await Promise.all([alice, bob].map((m) => rm(finalPath(m, GROUP, 'app.bin'))));
    await distributeOk(await write('v2', 'two', 'app.bin', MiB));
    await distributeOk(await write('notes', 'one', 'notes.txt', 64 * 1024));

    c.startMember(carolAll);
    const queued = await c.server!.waitForMsg('backlog queued for new member', { member: carolAll.id }, 30_000);
    expect(queued).toMatchObject({ deliveries: 3, backlog: 'all' });
    await waitUntil(() => received(carolAll).length === 3, 'carolAll to receive three files');
    // The whole history: v1 lands first, and v2 then replaces it (a version groupcast placed, unchanged).
    expect(received(carolAll)).toEqual(['app.bin', 'app.bin', 'notes.txt']);
    expect(await sha256File(finalPath(carolAll, GROUP, 'app.bin'))).toBe(files.v2.sha256);
    expect((await stored()).sort()).toEqual([files.v1.sha256, files.v2.sha256, files.notes.sha256].sort());
  });

  it('--backlog latest (the default): the newest file of each name only; a superseded one leaves the store', async () => {
    await restart([], [alice, bob, carolAll]);
    // The restart's retention pass: v1 is delivered everywhere and no longer anyone's backlog.
    await waitUntil(async () => !(await stored()).includes(files.v1.sha256), 'the superseded app.bin to leave the store', 20_000);
    expect((await stored()).sort()).toEqual([files.v2.sha256, files.notes.sha256].sort());

    c.startMember(carolLatest);
    const queued = await c.server!.waitForMsg('backlog queued for new member', { member: carolLatest.id }, 30_000);
    expect(queued).toMatchObject({ deliveries: 2, backlog: 'latest' });
    await waitUntil(() => received(carolLatest).length === 2, 'carolLatest to receive two files');
    expect(received(carolLatest)).toEqual(['app.bin', 'notes.txt']);
    expect(await sha256File(finalPath(carolLatest, GROUP, 'app.bin'))).toBe(files.v2.sha256);
  });

  it('--backlog none: nothing for the late joiner, and a file leaves the store once every member has it; history stays in status', async () => {
    await restart(['--backlog', 'none'], [alice, bob, carolAll, carolLatest]);
    await waitUntil(async () => (await stored()).length === 0, 'the store to empty', 20_000);
    const history = await c.deliveries();
    expect(history.filter((d) => d.file === 'app.bin' && d.state === 'delivered').length).toBeGreaterThanOrEqual(4);

    c.startMember(carolNone);
    await c.online(carolNone, 30_000);
    await c.server!.waitForMsg('member joined', { member: carolNone.id });
    const removed = waitForNew(c.server!, 'removed store files no transfer needs', {}, 60_000);
    const transfer = await distributeOk(await write('fresh', 'three', 'fresh.bin', 2 * MiB));
    expect(received(carolNone)).toEqual(['fresh.bin']);
    expect(carolNone.daemon!.logs.some((l) => l.msg === 'offer' && l.file !== 'fresh.bin')).toBe(false);
    // Every member has it: the store holds nothing for it, and status still shows the transfer.
    await removed;
    await waitUntil(async () => !(await stored()).includes(files.fresh.sha256), 'fresh.bin to leave the store', 20_000);
    const done = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(done.map((d) => d.state)).toEqual(Array(5).fill('delivered'));
  });

  it('prune removes now what retention would, and says how much', async () => {
    // A file no transfer needs, as a crash between storing and recording leaves; the daemon's own
    // pass would take it at its next timer (a minute after the restart above), prune takes it now.
    const stray = join(c.serverState, 'store', 'e'.repeat(64));
    await writeFile(stray, Buffer.alloc(5000, 1));
    const pruned = await h.run(SERVER_BIN, ['prune', '--json', '--state-dir', c.serverState]);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(JSON.parse(pruned.stdout)).toMatchObject({ files: 1, bytes: 5000, removed: [{ name: 'e'.repeat(64), bytes: 5000 }] });
    expect(await stored()).not.toContain('e'.repeat(64));
    const again = await h.run(SERVER_BIN, ['prune', '--state-dir', c.serverState]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/nothing to prune/);
  });
  it('a restart with a shorter --keep applies to what is already stored: a pending delivery the old keep would have kept expires', async () => {
    const offline = waitForNew(c.server!, 'member offline', { member: bob.id });
    expect(await bob.daemon!.stop('SIGTERM')).toBe(0);
    await offline;
    const path = join(source, 'late.bin');
    const sha256 = await writeRandomFile(path, MiB);
    const pending = await c.distribute(GROUP, [path], ['--timeout', '2s']);
    expect(pending.code, pending.stdout + pending.stderr).toBe(3);
    const transfer = await c.transferOf('late.bin');
    const { stdout } = await h.run(SERVER_BIN, ['status', '--json', '--state-dir', c.serverState]);
    const before = (JSON.parse(stdout) as { transfers: Array<{ id: string; expiresAt: number }> }).transfers.find((t) => t.id === transfer);
    expect(before!.expiresAt).toBeGreaterThan(Date.now() + DAY);
    expect(await stored()).toContain(sha256);

    await restart(['--backlog', 'none', '--keep', '3s'], [alice, carolAll]);
    await c.server!.waitForMsg('delivery expired', { transfer, member: bob.id }, 20_000);
    await waitUntil(async () => !(await stored()).includes(sha256), 'late.bin to leave the store', 20_000);
    const expired = (await c.deliveries()).find((d) => d.transfer === transfer && d.member === bob.id);
    expect(expired).toMatchObject({ state: 'failed', reason: 'expired (retention)' });
  });

});
