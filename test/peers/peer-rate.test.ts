import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Two members pulling one file: the server seeds each piece once, about half to each, and each takes
 * the other half from the other member. Uncapped, the server sends exactly one copy — every piece a
 * member keeps reaches its peer, also those kept while their link was still being set up. With
 * --peer-rate 1M the half each serves (8.4 MB) takes about 8 s, where on loopback it takes well under
 * one: a behaviour bound, not a speed.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
const SIZE = 16 * MiB;
const AT_LEAST_MS = 4_000;
let members: Member[];

async function startMembers(extra: string[]): Promise<void> {
  await Promise.all(members.map((m) => m.daemon?.stop()));
  for (const m of members) {
    m.daemon = h.spawn(m.name, CLIENT_BIN, [
      '--join', GROUP, '--server-id', c.serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name,
      ...c.network, '--peer-port', '0', ...extra,
    ]);
  }
  for (const m of members) await c.online(m, 30_000);
}

/** Distributes a new 16 MiB file; how long it took, every copy verified, and the server's and the peers' bytes. */
async function send(name: string): Promise<{ took: number; sent: number; fromPeers: number }> {
  const file = join(await h.dir('source'), name);
  const sha256 = await writeRandomFile(file, SIZE);
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
});
