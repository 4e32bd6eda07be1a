import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callDaemon } from '../../packages/server/src/operator/control-socket.js';
import { CLIENT_BIN, SERVER_BIN, harness, testPort, type Daemon } from '../support/daemons.js';
import { filesUnder, identityIn } from './tools.js';

/**
 * A member revoked while a file is on its way to it. carol is in Developers and Designers; dan only in
 * Developers. A large file goes to Developers; as soon as each member has accepted it, the member is
 * stopped (SIGSTOP), so the transfer is certainly mid-way, and revoked from Developers, then resumed.
 * carol keeps her connection (she is still in Designers) and gets a CANCEL; dan loses his connection
 * and, told he is revoked when he asks again, stops (exit 77). Neither ends up with the file. The
 * members take the server's stream (--no-peers), so that "mid-way" is a partial shorter than the file;
 * a revoke in the swarm is test/peers/swarm.test.ts.
 */
const h = harness();
const port = testPort();
const network = ['--interface', '127.0.0.1', '--port', String(port)];
const SIZE = 128 * 1024 * 1024;

let serverState: string;
let server: Daemon;
const ids = {} as Record<'carol' | 'dan', string>;
const members = {} as Record<'carol' | 'dan', { daemon: Daemon; downloads: string }>;

describe('revoking a member mid-transfer', () => {
  beforeAll(async () => {
    serverState = await h.dir('server');
    const serverId = (await identityIn(serverState, 'group-server')).signer.id;
    const states = {} as Record<'carol' | 'dan', string>;
    for (const name of ['carol', 'dan'] as const) {
      states[name] = await h.dir(`${name}-state`);
      ids[name] = (await identityIn(states[name], name)).signer.id;
    }
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({
      groups: [{ name: 'Developers', members: [ids.carol, ids.dan] }, { name: 'Designers', members: [ids.carol] }],
    }));
    server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', ...network]);
    await server.waitForMsg('group-server started');
    const groups = { carol: ['Developers', 'Designers'], dan: ['Developers'] };
    for (const name of ['carol', 'dan'] as const) {
      const downloads = await h.dir(`${name}-dl`);
      const joins = groups[name].flatMap((group) => ['--join', group]);
      const daemon = h.spawn(name, CLIENT_BIN, [...joins, '--server-id', serverId, '--state-dir', states[name], '--downloads', downloads, '--no-peers', ...network]);
      members[name] = { daemon, downloads };
    }
    for (const name of ['carol', 'dan'] as const) await server.waitForMsg('member online', { member: ids[name] });
  });

  afterAll(async () => {
    for (const { daemon } of Object.values(members)) daemon.proc.kill('SIGCONT');
    await h.cleanup();
  });

  it('stops the transfer: CANCEL to a member still connected, the link cut for one with no group left; no final file', async () => {
    const file = join(serverState, 'big.bin');
    await writeFile(file, Buffer.alloc(SIZE, 0x5a));
    const distributed = h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', serverState, '--json'], 120_000);

    await Promise.all((['carol', 'dan'] as const).map(async (name) => {
      const accepted = await members[name].daemon.waitForLog((l) => l.msg === 'accepted' && l.file === 'big.bin', 60_000);
      members[name].daemon.proc.kill('SIGSTOP');
      // Frozen mid-way: the partial file holds less than the whole.
      const partial = await stat(join(members[name].downloads, '.groupcast-partial', String(accepted.transfer)));
      expect(partial.size).toBeLessThan(SIZE);
    }));
    const revokes = (['carol', 'dan'] as const).map((name) => callDaemon(serverState, 'revoke', { group: 'Developers', id: ids[name] }));
    for (const name of ['carol', 'dan'] as const) await server.waitForMsg('member revoked', { member: ids[name] });
    for (const name of ['carol', 'dan'] as const) members[name].daemon.proc.kill('SIGCONT');
    await Promise.all(revokes);

    const result = await distributed;
    expect(result.code, result.stdout + result.stderr).toBe(1);
    const summary = JSON.parse(result.stdout) as { deliveries: Array<{ member: string; state: string; reason: string }> };
    for (const name of ['carol', 'dan'] as const) {
      const delivery = summary.deliveries.find((d) => d.member === ids[name]);
      expect(delivery).toMatchObject({ state: 'failed', reason: 'access to Developers revoked' });
    }

    // carol: told to cancel, her partial data deleted, her connection kept.
    await members.carol.daemon.waitForMsg('cancelled by the server', { file: 'big.bin' });
    expect(await filesUnder(members.carol.downloads)).toEqual([]);
    expect(await readdir(join(members.carol.downloads, '.groupcast-partial'))).toEqual([]);
    expect(members.carol.daemon.logs.some((l) => l.msg === 'disconnected')).toBe(false);
    expect(members.carol.daemon.logs.some((l) => l.msg === 'received')).toBe(false);

    // dan: cut off; asking again, he is told he is revoked and, with no group left, stops (exit 77).
    await members.dan.daemon.waitForMsg('disconnected');
    expect(await members.dan.daemon.waitForMsg('join refused', { group: 'Developers' })).toMatchObject({ reason: 'not authorized', revoked: true });
    expect(await members.dan.daemon.exited).toBe(77);
    expect(await filesUnder(members.dan.downloads).then((files) => files.filter((f) => !f.startsWith('.groupcast-partial/')))).toEqual([]);
    expect(members.dan.daemon.logs.some((l) => l.msg === 'received')).toBe(false);
  });
});
