import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { shortId } from '../../packages/shared/src/index.js';
import { Cluster, heldBytes, MiB, waitUntil, writeRandomFile } from '../durability/cluster.js';
import { HostileLink, startServer } from '../hardening/session-tools.js';
import { identityIn, joinAs } from '../security/tools.js';
import { harness, SERVER_BIN, type Daemon } from '../support/daemons.js';

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

  it('a member whose connection drops mid-transfer is one INFO line for the connection, not a WARN with the error', async () => {
    // A member stopped while the server writes may leave the server's next write failing with EPIPE
    // ("ended by the other party"); a crashed one, with ECONNRESET. Members go away: that is news. The
    // delivery it interrupts is what the operator hears about ('delivery interrupted').
    const leaver = await identityIn(await h.dir('leaver'), 'leaver');
    const server = await startServer(h, [{ name: 'Leavers', members: [leaver.signer.id] }]);
    await joinAs(leaver.signer, 'Leavers', server.udpPort);
    const link = await HostileLink.open(server.tcpPort, leaver);
    link.hello('leaver');
    await server.daemon.waitForMsg('member online', { member: leaver.signer.id });
    const file = join(await h.dir('leaver-files'), 'big.bin');
    await writeRandomFile(file, 64 * MiB);
    void h.run(SERVER_BIN, ['distribute', 'Leavers', file, '--state-dir', server.state, '--json'], 60_000).catch(() => undefined);
    const offer = await link.frame('offer', 30_000);
    link.send({ type: 'accept', transfer: offer.transfer, offset: 0 });
    await link.until(() => link.frames.filter((frame) => frame.type === 'data').length >= 8, 'DATA streaming');
    link.reset();
    const closed = await server.daemon.waitForLog(
      (l) => l.msg === 'member connection closed' && l.member === shortId(leaver.signer.id), 30_000, 'the leaver\'s connection closed',
    );
    expect(closed.level).toBe(30);
    expect(closed.err).toBeUndefined();
    expect(closed.code).toBe('ECONNRESET');
  }, 60_000);
});
