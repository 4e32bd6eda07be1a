import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, waitForNew, writeRandomFile, type Member } from './cluster.js';

/**
 * Members that are away when a file is distributed: the operator is told they are pending, they get
 * the file when they come back (in order, after the ones before it), a member that joins later gets
 * the backlog, and one that stays away past the retention time expires.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let bob: Member;
let carol: Member;
let source: string;

beforeAll(async () => {
  [alice, bob, carol] = await Promise.all(['alice', 'bob', 'carol'].map((name) => c.member(name, [GROUP]))) as [Member, Member, Member];
  source = await h.dir('source');
  await c.startServer([{ name: GROUP, members: [alice, bob, carol] }]);
  await c.startOnline([alice, bob]);
  await stop(bob);
});

afterAll(() => h.cleanup());

async function stop(member: Member): Promise<void> {
  const offline = waitForNew(c.server!, 'member offline', { member: member.id });
  expect(await member.daemon!.stop('SIGTERM')).toBe(0);
  await offline;
}

async function file(name: string, size: number): Promise<{ path: string; sha256: string }> {
  const path = join(source, name);
  return { path, sha256: await writeRandomFile(path, size) };
}

describe('offline members and retention', () => {
  it('an offline member is pending (exit 3), then gets every file in order when it returns; a late joiner gets the backlog', async () => {
    const one = await file('one.bin', MiB);
    const first = await c.distribute(GROUP, [one.path]);
    expect(first.code, first.stdout + first.stderr).toBe(3);
    expect(first.stdout).toMatch(/1 delivered, 1 pending, 0 failed/);

    const waiting = (await c.deliveries()).find((d) => d.member === bob.id && d.file === 'one.bin');
    expect(waiting).toMatchObject({ state: 'pending', online: false, waiting: 'member offline' });
    expect(await c.statusText()).toMatch(/one\.bin\s+\S+\s+bob\s+pending\s+member offline/);

    const two = await file('two.bin', MiB);
    const timedOut = await c.distribute(GROUP, [two.path], ['--wait-all', '--timeout', '1s']);
    expect(timedOut.code).toBe(3);
    expect(timedOut.stdout).toMatch(/1 delivered, 1 pending, 0 failed \(timed out waiting\)/);

    const three = await file('three.bin', 4 * MiB);
    const waitingAll = c.distribute(GROUP, [three.path], ['--wait-all', '--timeout', '60s']);
    await c.transferOf('three.bin');
    c.startMember(bob);
    const all = await waitingAll;
    expect(all.code, all.stdout + all.stderr).toBe(0);
    expect(all.stdout).toMatch(/2 delivered, 0 pending, 0 failed/);

    const received = bob.daemon!.logs.filter((l) => l.msg === 'received').map((l) => l.file);
    expect(received).toEqual(['one.bin', 'two.bin', 'three.bin']);
    for (const f of [{ name: 'one.bin', ...one }, { name: 'two.bin', ...two }, { name: 'three.bin', ...three }]) {
      expect(await sha256File(finalPath(bob, GROUP, f.name))).toBe(f.sha256);
    }

    // Carol was allowed from the start but joins only now: the group's unexpired files are queued for her.
    c.startMember(carol);
    await c.server!.waitForMsg('backlog queued for new member', { member: carol.id });
    for (const name of ['one.bin', 'two.bin', 'three.bin']) await carol.daemon!.waitForMsg('received', { file: name });
    expect(await readdir(join(carol.downloads, GROUP))).toEqual(['one.bin', 'three.bin', 'two.bin']);
  });

  it('with --keep 3s, a member that stays away expires: failed "expired", the stored copy removed, never sent later', async () => {
    await c.server!.stop('SIGTERM');
    await c.restartServer(['--tcp-port', '0', '--keep', '3s']);
    for (const m of [alice, bob, carol]) await c.online(m, 30_000);
    await stop(bob);

    const four = await file('four.bin', MiB);
    // Bob dropped a moment ago, so distribute would give him a few seconds to redial; stop at 2 s.
    const result = await c.distribute(GROUP, [four.path], ['--timeout', '2s']);
    expect(result.code, result.stdout + result.stderr).toBe(3);
    expect(result.stdout).toMatch(/2 delivered, 1 pending, 0 failed/);
    const transfer = await c.transferOf('four.bin');

    await c.server!.waitForMsg('delivery expired', { transfer, member: bob.id }, 10_000);
    await c.server!.waitForMsg('removed store files no transfer needs', {}, 10_000);
    const expired = (await c.deliveries()).find((d) => d.transfer === transfer && d.member === bob.id);
    expect(expired).toMatchObject({ state: 'failed', reason: 'expired (retention)', waiting: '' });
    expect(await readdir(join(c.serverState, 'store'))).not.toContain(four.sha256);

    // The expiry is on record: after a restart (back to a long retention, so nothing else can expire
    // on a slow machine) bob, back online, gets what is distributed now and nothing of the expired file.
    await c.server!.stop('SIGTERM');
    await c.restartServer(['--tcp-port', '0']);
    c.startMember(bob);
    for (const m of [alice, bob, carol]) await c.online(m, 30_000);
    expect((await c.deliveries()).find((d) => d.transfer === transfer && d.member === bob.id)?.state).toBe('failed');
    const five = await file('five.bin', MiB);
    const now = await c.distribute(GROUP, [five.path]);
    expect(now.code, now.stdout + now.stderr).toBe(0);
    expect(await sha256File(finalPath(bob, GROUP, 'five.bin'))).toBe(five.sha256);
    expect(await readdir(join(bob.downloads, GROUP))).not.toContain('four.bin');
    expect(bob.daemon!.logs.some((l) => l.msg === 'offer' && l.file === 'four.bin')).toBe(false);
  });
});
