import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Cluster, heldBytes, MiB, waitUntil, writeRandomFile } from '../durability/cluster.js';
import { harness, type Daemon } from '../support/daemons.js';

/**
 * A normal shutdown is not trouble: each daemon stopped with SIGINT while a file is on its way exits 0
 * and logs nothing at WARN or above, and the other side reports the link going as one line, without a
 * stack trace (a server restarting is normal for a member; a member stopping is normal for a server).
 */
const h = harness();
const c = new Cluster(h);

afterAll(() => h.cleanup());

const warnings = (daemon: Daemon) => daemon.logs.filter((l) => (l.level ?? 0) >= 40);
const stacks = (daemon: Daemon) => daemon.logs.filter((l) => JSON.stringify(l).includes('"stack"'));

describe('SIGINT', () => {
  it('stops the server, then the member, mid-transfer: exit 0, no WARN or ERROR from the one stopped, no stack from the other', async () => {
    const alice = await c.member('alice', ['Developers']);
    // Slow enough that the file is certainly mid-way at each stop.
    await c.startServer([{ name: 'Developers', members: [alice] }], ['--rate', '4M']);
    const member = c.startMember(alice);
    await c.online(alice);
    const file = join(c.serverState, 'big.bin');
    await writeRandomFile(file, 64 * MiB);
    void c.distribute('Developers', [file], ['--json']).catch(() => undefined);
    await member.waitForMsg('accepted', { file: 'big.bin' }, 60_000);
    // Some bytes in: stopped right after the ACCEPT, the member would start over, not resume.
    await waitUntil(async () => (await heldBytes(alice)) >= MiB, 'alice holding 1 MiB');

    const first = c.server!;
    first.proc.kill('SIGINT');
    expect(await first.exited).toBe(0);
    expect(warnings(first)).toEqual([]);
    await member.waitForMsg('disconnected');
    await member.waitForMsg('data connection failed; retrying', {}, 30_000);

    const second = await c.restartServer();
    await c.online(alice);
    await member.waitForMsg('resuming', { file: 'big.bin' }, 60_000);
    member.proc.kill('SIGINT');
    expect(await member.exited).toBe(0);
    expect(warnings(member)).toEqual([]);
    await second.waitForMsg('member offline', { member: alice.id });
    expect(stacks(second)).toEqual([]);

    second.proc.kill('SIGINT');
    expect(await second.exited).toBe(0);
    expect(warnings(second).filter((l) => l.msg !== 'delivery interrupted')).toEqual([]);
    expect(stacks(second)).toEqual([]);
  }, 120_000);
});
