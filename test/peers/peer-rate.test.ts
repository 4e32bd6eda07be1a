import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, waitForNew, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Two members pulling one file: the server seeds each piece once, about half to each, and each takes
 * the other half from the other member. Uncapped, the server sends exactly one copy — every piece a
 * member keeps reaches its peer, also those kept while their link was still being set up. With
 * --peer-rate 1M the half each serves (8.4 MB) takes about 8 s, where on loopback it takes well under
 * one: a behaviour bound, not a speed. At the lowest rate, a request waits its turn longer than the
 * per-piece timeout, which counts bytes arriving, not pieces completed.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
const SIZE = 16 * MiB;
const AT_LEAST_MS = 4_000;
let members: Member[];

/** (Re)starts both members and waits until the server has seen each online again, not from an earlier start. */
async function startMembers(extra: string[]): Promise<void> {
  await Promise.all(members.map((m) => m.daemon?.stop()));
  const online = members.map((m) => waitForNew(c.server!, 'member online', { member: m.id }, 30_000));
  for (const m of members) {
    m.daemon = h.spawn(m.name, CLIENT_BIN, [
      '--join', GROUP, '--server-id', c.serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name,
      ...c.network, '--peer-port', '0', ...extra,
    ]);
  }
  await Promise.all(online);
}

/** Distributes a new file (16 MiB unless said); how long it took, every copy verified, and the server's and the peers' bytes. */
async function send(name: string, size = SIZE): Promise<{ took: number; sent: number; fromPeers: number }> {
  const file = join(await h.dir('source'), name);
  const sha256 = await writeRandomFile(file, size);
  const started = performance.now();
  const ran = await c.distribute(GROUP, [file]);
  const took = performance.now() - started;
  expect(ran.code, ran.stdout + ran.stderr).toBe(0);
  for (const m of members) expect(await sha256File(finalPath(m, GROUP, name))).toBe(sha256);
  const deliveries = (await c.deliveries()).filter((d) => d.file === name);
  return { took, sent: deliveries.reduce((sum, d) => sum + d.bytesSent, 0), fromPeers: deliveries.reduce((sum, d) => sum + d.bytesFromPeers, 0) };
}

beforeAll(async () => {
  members = [await c.member('r0', [GROUP]), await c.member('r1', [GROUP])];
  await c.startServer([{ name: GROUP, members }]);
});

afterAll(() => h.cleanup());

describe('two members pulling from each other', () => {
  it('uncapped: the server sends one copy and the members bring each other the rest', async () => {
    await startMembers([]);
    const { sent, fromPeers } = await send('open.bin');
    expect(sent).toBe(SIZE);
    expect(fromPeers).toBe(SIZE);
  });

  it('--peer-rate holds what members serve each other to the rate, and peers still carry their share', async () => {
    await startMembers(['--peer-rate', '1M']);
    const { took, fromPeers } = await send('capped.bin');
    expect(fromPeers).toBeGreaterThan(SIZE / 2);
    expect(took).toBeGreaterThanOrEqual(AT_LEAST_MS);
  });

  it('at the lowest --peer-rate a request waits longer than PIECE_TIMEOUT_MS for its turn, and is not timed out while bytes flow', async () => {
    // Each member serves the other its 4 pieces of 256 KiB, all requested at once, at 64 kB/s: the last
    // completes ~16 s after it was asked for. Timed out at 10 s, it was asked again of the same slow
    // link (or the server), and two in a row closed the link.
    await startMembers(['--peer-rate', '64k']);
    const size = 2 * MiB;
    const { sent, fromPeers } = await send('slow.bin', size);
    for (const m of members) {
      expect(m.daemon!.logs.filter((l) => l.msg === 'piece request timed out; asking elsewhere' || l.msg === 'peer link closed'), m.name).toEqual([]);
    }
    expect(sent).toBe(size);
    expect(fromPeers).toBe(size);
  });
});
