import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, harness, SERVER_BIN } from '../support/daemons.js';
import { Cluster, MiB, partialDir, waitForNew, waitUntil, writeRandomFile, type Member } from './cluster.js';

/**
 * `cancel` of a pulled delivery: three members on peers (the swarm, on loopback), the transfer held
 * back by a rate of its own so it is certainly mid-way; the operator cancels it. Every member stops
 * pulling, deletes its partial, never places the file, and status says cancelled.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
const SIZE = 32 * MiB;
let members: Member[];

beforeAll(async () => {
  members = await Promise.all(['p0', 'p1', 'p2'].map((name) => c.member(name, [GROUP])));
  await c.startServer([{ name: GROUP, members }]);
  for (const m of members) {
    m.daemon = h.spawn(m.name, CLIENT_BIN, [
      '--join', GROUP, '--server-id', c.serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name,
      ...c.network, '--peer-port', '0',
    ]);
  }
  for (const m of members) await c.online(m);
});

afterAll(async () => {
  for (const m of members) m.daemon?.proc.kill('SIGCONT');
  await h.cleanup();
});

const partials = (m: Member): Promise<string[]> => readdir(partialDir(m)).catch(() => []);

describe('cancel of a pulled delivery', () => {
  it('mid-swarm: every member stops, drops its partial, nothing is placed; status says cancelled', async () => {
    const file = join(await h.dir('source'), 'swarmed.bin');
    await writeRandomFile(file, SIZE);
    const distributing = c.distribute(GROUP, [file], ['--rate', '2M']);
    const transfer = await c.transferOf('swarmed.bin');
    // Every member is pulling pieces (not taking the server's stream), its partial begun.
    await Promise.all(members.map((m) => m.daemon!.waitForLog((l) => l.msg === 'accepted; pulling pieces', 60_000, 'pulling pieces')));
    await waitUntil(async () => (await c.deliveries()).filter((d) => d.transfer === transfer && d.state === 'sending').length === members.length
      && (await Promise.all(members.map(partials))).every((names) => names.length > 0), 'every member pulling swarmed.bin');

    // Frozen while the server cancels: on waking, each works through the pieces already on its link and asks
    // for more before it reads the CANCEL, so REQUESTs cross it, as they do on any busy link.
    for (const m of members) m.daemon!.proc.kill('SIGSTOP');
    const cancelling = waitForNew(c.server!, 'cancelling deliveries', { transfer });
    const cancelled = h.run(SERVER_BIN, ['cancel', transfer.slice(0, 8), '--json', '--state-dir', c.serverState]);
    await cancelling;
    const linkLogs = new Map(members.map((m) => [m, m.daemon!.logs.length]));
    for (const m of members) m.daemon!.proc.kill('SIGCONT');
    const answer = await cancelled;
    expect(answer.code, answer.stdout + answer.stderr).toBe(0);
    const change = JSON.parse(answer.stdout) as { changed: Array<{ state: string; reason: string }> };
    expect(change.changed.map((d) => [d.state, d.reason])).toEqual(members.map(() => ['failed', 'cancelled by the operator']));

    expect((await distributing).code).toBe(1);
    for (const m of members) {
      await m.daemon!.waitForMsg('cancelled by the server', { file: 'swarmed.bin' }, 30_000);
      await waitUntil(async () => (await partials(m)).length === 0, `${m.name} deleting its partial`, 30_000);
      expect(await readdir(join(m.downloads, GROUP)).catch(() => []), m.name).not.toContain('swarmed.bin');
      expect(m.daemon!.logs.some((l) => l.msg === 'received' && l.file === 'swarmed.bin'), m.name).toBe(false);
      // A REQUEST that crossed the CANCEL is dropped, not taken for a protocol violation that cuts the link.
      expect(m.daemon!.logs.slice(linkLogs.get(m)).filter((l) => l.msg === 'disconnected'), m.name).toEqual([]);
    }
    expect(c.server!.logs.filter((l) => /protocol violation/.test(String((l.err as { message?: string } | undefined)?.message ?? l.msg)))).toEqual([]);
    const deliveries = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(deliveries.map((d) => [d.state, d.reason])).toEqual(members.map(() => ['failed', 'cancelled by the operator']));
    expect(await c.statusText()).toMatch(/cancelled by the operator/);
  });
});
