// A member host's cable is pulled in the middle of a transfer and plugged back in: the connection
// dies on both sides (heartbeat timeout), the member reconnects, and the transfer resumes from the
// bytes already held instead of starting over. The other member, on its own link, is unaffected.
// The members take the server's stream (--no-peers), whose byte offsets this test pins down; a swarm
// member resuming from its pieces is test/peers/swarm.test.ts.

import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTopology, type Host, type Topology } from '../harness/netns.js';
import type { Daemon } from '../support/daemons.js';
import {
  CLIENT_BIN, distribute, idOf, Lan, multihostAvailable, randomFile, SERVER_BIN, sha256File,
  type Member,
} from './support.js';

const available = await multihostAvailable();

const FILE_BYTES = 6 * 1024 * 1024;
/** 16 Mbit/s: the file takes about three seconds, long enough to cut the link part-way. */
const RATE_MBIT = 16;
const CUT_AFTER_BYTES = 1024 * 1024;
const POLL_MS = 20;
const HEARTBEAT_WAIT_MS = 30_000;

/** Waits (bounded) until the file exists and holds at least `bytes`. */
async function grownTo(path: string, bytes: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const size = await stat(path).then((s) => s.size, () => 0);
    if (size >= bytes) return size;
    if (Date.now() > deadline) throw new Error(`${path} did not reach ${bytes} bytes within ${timeoutMs} ms (has ${size})`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

describe.skipIf(!available)('a link cut mid-transfer', () => {
  const lan = new Lan();
  let topo: Topology;
  let serverHost: Host;
  let serverState: string;
  let server: Daemon;
  const members: Array<Member & { daemon: Daemon }> = [];

  beforeAll(async () => {
    topo = await createTopology({ hosts: 3, ipv6: false, prefix: 'resume' });
    serverHost = topo.hosts[0]!;
    serverState = await lan.dir('server');
    const serverId = await idOf(lan, serverHost, SERVER_BIN, serverState);
    for (const host of topo.hosts.slice(1)) members.push({ ...await lan.member(host), daemon: undefined as never });
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: members.map((m) => m.id) }] }));
    server = lan.spawn(serverHost, 'server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--interface', serverHost.ipv4!]);
    await server.waitForMsg('group-server started');
    for (const m of members) {
      m.daemon = lan.spawn(m.host, m.host.name, CLIENT_BIN, [
        '--join', 'Developers', '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads, '--interface', m.host.ipv4!,
        '--no-peers',
      ]);
    }
    for (const m of members) await server.waitForMsg('member online', { member: m.id });
  });

  afterAll(async () => {
    await lan.cleanup();
    await topo?.destroy();
  });

  it('resumes from the bytes already received once the link is back', async () => {
    const [cut, steady] = members as [typeof members[0], typeof members[0]];
    await cut.host.limitRate(RATE_MBIT);
    const file = join(serverState, 'image.bin');
    const sha256 = await randomFile(file, FILE_BYTES);
    const distribution = distribute(lan, serverHost, serverState, 'Developers', [file], 90_000);

    const offer = await cut.daemon.waitForMsg('accepted');
    const partial = join(cut.downloads, '.groupcast-partial', String(offer.transfer));
    const heldAtCut = await grownTo(partial, CUT_AFTER_BYTES, 20_000);
    await cut.host.cutLink();
    expect(heldAtCut).toBeLessThan(FILE_BYTES);

    // The steady member finishes while the other link is down; the cut one notices the silence.
    await steady.daemon.waitForMsg('received', { sha256 });
    await cut.daemon.waitForMsg('disconnected', {}, HEARTBEAT_WAIT_MS);
    await cut.host.restoreLink();

    const resumed = await cut.daemon.waitForMsg('resuming', { transfer: offer.transfer }, HEARTBEAT_WAIT_MS);
    expect(resumed.offset).toBeGreaterThanOrEqual(heldAtCut);
    expect(resumed.offset).toBeLessThan(FILE_BYTES);
    await cut.daemon.waitForMsg('received', { sha256 });

    const { code, summary } = await distribution;
    expect(code, JSON.stringify(summary)).toBe(0);
    const delivered = await server.waitForLog((l) => l.msg === 'delivered' && l.member === cut.id);
    expect(delivered.resumedAt).toBe(resumed.offset);
    expect(Number(delivered.bytesSent)).toBe(FILE_BYTES - Number(resumed.offset));
    for (const m of members) expect(await sha256File(join(m.downloads, 'Developers', 'image.bin'))).toBe(sha256);
  }, 90_000);
});
