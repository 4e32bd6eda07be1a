// A tree pulled from peers on a namespace LAN (PROTOCOL.md §7.7 *Pulled*): a hostile member built from
// the shared codecs claims every piece of the tree and serves each one corrupted: it is dropped, logged
// with its id and shown by status, and every honest member ends with the tree verified and identical;
// a member revoked mid-pull is dropped by its peers at once; members that cannot reach each other's
// peer port get the whole tree from the server.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateIdentity } from '../../packages/shared/src/index.js';
import { waitUntil } from '../durability/cluster.js';
import { createTopology, type Host, type Topology } from '../harness/netns.js';
import type { Daemon } from '../support/daemons.js';
import { CLIENT_BIN, distribute, idOf, Lan, multihostAvailable, SERVER_BIN, type Member } from '../multihost/support.js';
import { listTree, underUmask } from '../trees/tree-fixtures.js';
import { revokeWhileFrozen } from './support.js';

const available = await multihostAvailable();
const MiB = 1024 * 1024;
const GROUP = 'Developers';
const MEMBERS = 4;
/** Each host's link: a tree takes a few seconds, long enough for the hostile's pieces to be asked for. */
const LINK_MBIT = 100;
const HOSTILE = resolve(import.meta.dirname, 'hostile-peer.mjs');
const BAD_PIECE = 'peer sent a piece that does not match the manifest; dropped for this transfer';

/** Bytes written under a directory (a member's staging areas), counted by the blocks its files take. */
async function stagedBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (entry.isFile()) total += await stat(join(entry.parentPath, entry.name)).then((s) => s.blocks * 512, () => 0);
  }
  return total;
}

describe.skipIf(!available)('a tree pulled on a LAN', () => {
  const lan = new Lan();
  let topo: Topology;
  let serverHost: Host;
  let hostileHost: Host;
  let serverState: string;
  let server: Daemon;
  let members: Member[];
  let hostileId: string;
  let hostileStateDir: string;

  /** A tree of nested directories, an empty one, an executable, small files and one file of many pieces; returns its size. */
  async function makeTree(name: string): Promise<{ path: string; size: number }> {
    const root = join(serverState, 'trees', name);
    await mkdir(join(root, 'lib', 'sub'), { recursive: true });
    await mkdir(join(root, 'empty'));
    await writeFile(join(root, 'run.sh'), '#!/bin/sh\necho lan\n');
    await chmod(join(root, 'run.sh'), 0o755);
    let size = 19;
    for (let i = 0; i < 60; i++) {
      const bytes = randomBytes(2048 + i * 512);
      await writeFile(join(root, 'lib', i % 2 ? 'sub' : '.', `f${i}.dat`), bytes);
      size += bytes.length;
    }
    const large = randomBytes(12 * MiB);
    await writeFile(join(root, 'large.bin'), large);
    return { path: root, size: size + large.length };
  }

  const expectIdentical = async (name: string, source: string, who: Member[]): Promise<void> => {
    const expected = underUmask(await listTree(source));
    for (const m of who) expect(await listTree(`${join(m.downloads, GROUP, name)}/`), m.host.name).toEqual(expected);
  };

  beforeAll(async () => {
    topo = await createTopology({ hosts: MEMBERS + 2, ipv6: false, prefix: 'trswarm' });
    const [h0, h1, ...rest] = topo.hosts;
    serverHost = h0!;
    hostileHost = h1!;
    for (const host of topo.hosts) await host.limitRate(LINK_MBIT);
    serverState = await lan.dir('server');
    const serverId = await idOf(lan, serverHost, SERVER_BIN, serverState);
    members = await Promise.all(rest.map((host) => lan.member(host)));
    hostileStateDir = await lan.dir('hostile');
    hostileId = (await loadOrCreateIdentity(hostileStateDir, 'hostile')).signer.id;
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: GROUP, members: [...members.map((m) => m.id), hostileId] }] }));
    server = lan.spawn(serverHost, 'server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--interface', serverHost.ipv4!]);
    await server.waitForMsg('group-server started');
    for (const m of members) {
      m.daemon = lan.spawn(m.host, m.host.name, CLIENT_BIN, [
        '--join', GROUP, '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads, '--interface', m.host.ipv4!, '--name', m.host.name,
      ]);
    }
    for (const m of members) await server.waitForMsg('member online', { member: m.id, address: m.host.ipv4 }, 60_000);
  }, 120_000);

  afterAll(async () => {
    await lan.cleanup();
    await topo?.destroy();
  });

  it('a hostile member serving corrupted tree pieces is dropped, logged with its id and shown by status; every honest member ends identical', async () => {
    const hostile = lan.spawn(hostileHost, 'hostile', HOSTILE, [JSON.stringify({
      stateDir: hostileStateDir, group: GROUP, server: serverHost.ipv4, tcpPort: 47701, udpPort: 47700, host: hostileHost.ipv4,
    })]);
    await hostile.waitForMsg('hostile connected', {}, 60_000);
    await server.waitForMsg('member online', { member: hostileId }, 60_000);
    const tree = await makeTree('hostile-tree');
    const { summary } = await distribute(lan, serverHost, serverState, GROUP, [tree.path], 120_000);
    const honest = summary.deliveries.filter((d) => d.member !== hostileId);
    expect(honest.filter((d) => d.state === 'delivered'), JSON.stringify(honest.map((d) => [d.state, d.reason]))).toHaveLength(MEMBERS);
    await expectIdentical('hostile-tree', tree.path, members);
    // Pulled, not streamed: the tree came with PEERS.
    for (const m of members) expect(m.daemon!.logs.some((l) => l.msg === 'accepted a tree; pulling pieces' && l.file === 'hostile-tree'), m.host.name).toBe(true);
    await hostile.waitForMsg('hostile served a corrupted piece', {}, 30_000);

    const caught = members.filter((m) => m.daemon!.logs.some((l) => l.msg === BAD_PIECE && l.file === 'hostile-tree'));
    expect(caught.length).toBeGreaterThan(0);
    for (const m of caught) {
      // Dropped for the transfer after its first bad piece: never linked to again for it.
      const lines = m.daemon!.logs.filter((l) => l.msg === BAD_PIECE && l.file === 'hostile-tree');
      expect(lines.map((l) => l.peer), m.host.name).toEqual([hostileId]);
      const json = await lan.run(m.host, CLIENT_BIN, ['status', '--json', '--state-dir', m.state]);
      const report = JSON.parse(json.stdout) as { status: { badPeers: { count: number; recent: Array<{ peer: string; name: string }> } } };
      expect(report.status.badPeers.recent.some((b) => b.peer === hostileId && b.name === 'hostile-tree'), m.host.name).toBe(true);
    }
    hostile.proc.kill('SIGKILL');
    await hostile.exited;
  }, 180_000);

  it('a member revoked mid-pull is dropped by its peers at once and places nothing', async () => {
    const revoked = members[1]!;
    const others = members.filter((m) => m !== revoked);
    const tree = await makeTree('revoked-tree');
    // The server slowed (2 MB/s): the tree is still being pulled when the member is revoked.
    const distributing = distribute(lan, serverHost, serverState, GROUP, [tree.path, '--rate', '2M'], 120_000);
    await revoked.daemon!.waitForMsg('accepted a tree; pulling pieces', { file: 'revoked-tree' }, 60_000);
    const staging = join(revoked.downloads, '.groupcast-partial');
    await waitUntil(async () => (await stagedBytes(staging)) >= MiB, 'the revoked member holding 1 MiB of the tree');
    await revokeWhileFrozen(lan, serverHost, serverState, GROUP, revoked, others);
    expect(await revoked.daemon!.exited).toBe(77);
    const { summary } = await distributing;
    expect(summary.deliveries.find((d) => d.member === revoked.id)?.state).toBe('failed');
    await expectIdentical('revoked-tree', tree.path, others);
    await expect(stat(join(revoked.downloads, GROUP, 'revoked-tree'))).rejects.toThrow();
    members = others;
  }, 180_000);

  it('members that cannot reach each other get the whole tree from the server, verified', async () => {
    for (const m of members) {
      for (const other of [...members, { host: hostileHost }]) {
        if (other.host !== m.host) await m.host.exec('ip', ['route', 'add', 'prohibit', `${other.host.ipv4!}/32`]);
      }
    }
    const tree = await makeTree('alone-tree');
    const { code, summary } = await distribute(lan, serverHost, serverState, GROUP, [tree.path], 120_000);
    const honest = summary.deliveries.filter((d) => d.member !== hostileId);
    expect(honest.filter((d) => d.state === 'delivered'), JSON.stringify(honest.map((d) => [d.state, d.reason]))).toHaveLength(members.length);
    expect(code === 0 || summary.deliveries.some((d) => d.member === hostileId && d.state !== 'delivered')).toBe(true);
    await expectIdentical('alone-tree', tree.path, members);
    const result = await lan.run(serverHost, SERVER_BIN, ['status', '--json', '--state-dir', serverState]);
    const status = JSON.parse(result.stdout) as { transfers: Array<{ name: string; deliveries: Array<{ member: string; bytesSent: number; bytesFromPeers: number }> }> };
    const deliveries = status.transfers.find((t) => t.name === 'alone-tree')!.deliveries.filter((d) => d.member !== hostileId);
    expect(deliveries).toHaveLength(members.length);
    for (const d of deliveries) {
      expect(d.bytesFromPeers, d.member).toBe(0);
      expect(d.bytesSent, d.member).toBeGreaterThanOrEqual(tree.size);
    }
  }, 180_000);
});
