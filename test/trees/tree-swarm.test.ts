import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { Cluster, finalPath, MiB, partialDir, waitForNew, waitUntil, type Member } from '../durability/cluster.js';
import { listTree, underUmask } from './tree-fixtures.js';
import { MIN_PULLED_TREE_PIECE } from '../../packages/server/src/delivery/distributor.js';

/**
 * A tree pulled like a file (PROTOCOL.md §7.6, §7.7 *Pulled*), on loopback: members that say trees and
 * peers take TREE, PEERS, OFFER, and pull the tree's pieces from each other and the server; every copy
 * ends identical, the server sends about one copy, and a member killed -9 mid-pull resumes from the
 * pieces it held.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
/** A second group: the four members and one more, started only once the others hold its tree. */
const LATE = 'Late';
/** Small files beside the large one: enough to pull, few enough that pieces average over MIN_PULLED_TREE_PIECE. */
const SMALL_FILES = 100;
let members: Member[];
let late: Member;
/** The first test's tree, changed by the next into its second version. */
let buildSource: string;

afterAll(() => h.cleanup());

beforeAll(async () => {
  members = [];
  for (let i = 0; i < 4; i++) members.push(await c.member(`t${i}`, [GROUP, LATE]));
  late = await c.member('late', [LATE]);
  await c.startServer([{ name: GROUP, members }, { name: LATE, members: [...members, late] }]);
  await c.startOnline(members);
});

/** Nested directories, an empty one, an executable, many small files and one file of many pieces; returns its size. */
async function makeTree(root: string, big: number): Promise<number> {
  await mkdir(join(root, 'bin'), { recursive: true });
  await mkdir(join(root, 'lib', 'deep', 'er'), { recursive: true });
  await mkdir(join(root, 'empty'));
  await writeFile(join(root, 'bin', 'run.sh'), '#!/bin/sh\necho pulled\n');
  await chmod(join(root, 'bin', 'run.sh'), 0o755);
  await writeFile(join(root, 'zero'), '');
  let size = (await stat(join(root, 'bin', 'run.sh'))).size;
  for (let i = 0; i < SMALL_FILES; i++) {
    const bytes = randomBytes(1024 + ((i * 7919) % (40 * 1024)));
    await writeFile(join(root, 'lib', i % 2 ? 'deep' : 'deep/er', `f${String(i).padStart(3, '0')}.dat`), bytes);
    size += bytes.length;
  }
  const large = randomBytes(big);
  await writeFile(join(root, 'lib', 'large.bin'), large);
  return size + large.length;
}

interface PeerStatus { fromServer: number; fromPeers: number }

async function peerStatus(m: Member): Promise<PeerStatus | undefined> {
  const text = await readFile(join(m.state, 'status.json'), 'utf8').catch(() => '{}');
  return (JSON.parse(text) as { peers?: PeerStatus }).peers;
}

/** Bytes staged for a transfer: the files written so far under its staging directory. */
async function staged(m: Member, transfer: string): Promise<number> {
  let total = 0;
  const pending = [join(partialDir(m), transfer)];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) pending.push(path);
      else total += await stat(path).then((s) => s.blocks * 512, () => 0);
    }
  }
  return total;
}

describe('a tree pulled from peers', () => {
  it('4 members: every copy identical (paths, contents, modes), bytes from peers, and the server sent less than twice the tree', async () => {
    const source = join(await h.dir('src'), 'build');
    buildSource = source;
    const size = await makeTree(source, 12 * MiB + 17);
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'build' });
    const pulling = members.map((m) => waitForNew(m.daemon!, 'accepted a tree; pulling pieces', { file: 'build' }, 60_000));
    const ran = await c.distribute(GROUP, [source]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    const transfer = String((await recorded).transfer);
    await Promise.all(pulling);
    const expected = underUmask(await listTree(source));
    for (const m of members) expect(await listTree(`${finalPath(m, GROUP, 'build')}/`), m.name).toEqual(expected);
    const deliveries = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(deliveries.map((d) => d.state)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
    const sent = deliveries.reduce((sum, d) => sum + d.bytesSent, 0);
    expect(deliveries.reduce((sum, d) => sum + d.bytesFromPeers, 0)).toBeGreaterThan(0);
    expect(sent).toBeLessThan(2 * size);
    // No member took anything that did not match.
    for (const m of members) expect(m.daemon!.logs.some((l) => l.msg === 'peer sent a piece that does not match the manifest; dropped for this transfer'), m.name).toBe(false);
  });

  it('a new version of the tree: each member seeds from the version in place and pulls only what changed, and ends identical', async () => {
    const source = buildSource;
    // One small file changed, one added, and one piece's worth of the large file rewritten.
    await writeFile(join(source, 'lib', 'deep', 'f001.dat'), randomBytes(3000));
    await writeFile(join(source, 'lib', 'added.txt'), 'new in version 2\n');
    const large = await open(join(source, 'lib', 'large.bin'), 'r+');
    await large.write(randomBytes(256 * 1024), 0, 256 * 1024, 4 * MiB);
    await large.close();
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'build' });
    const seeded = members.map((m) => waitForNew(m.daemon!, 'seeded a tree from the version being replaced', {}, 60_000));
    const ran = await c.distribute(GROUP, [source]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    const transfer = String((await recorded).transfer);
    for (const line of await Promise.all(seeded)) expect(Number(line.linked) + Number(line.copied)).toBeGreaterThan(SMALL_FILES / 2);
    const expected = underUmask(await listTree(source));
    for (const m of members) expect(await listTree(`${finalPath(m, GROUP, 'build')}/`), m.name).toEqual(expected);
    const deliveries = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(deliveries.map((d) => d.state)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
    // Per member, from anyone: the changed piece of the large file and the two small files, not the tree.
    for (const d of deliveries) expect(d.bytesSent + d.bytesFromPeers, d.member).toBeLessThan(MiB);
  });

  it('a member that comes later pulls the tree from members that placed it, served from their placed versions', async () => {
    const source = join(await h.dir('src'), 'later');
    await makeTree(source, 8 * MiB);
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'later' });
    const placed = members.map((m) => waitForNew(m.daemon!, 'received a tree', { file: 'later' }, 60_000));
    const ran = await c.distribute(LATE, [source]);
    // Delivered to the four; the fifth has never joined: it gets the tree as the group's backlog when it does.
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    const transfer = String((await recorded).transfer);
    await Promise.all(placed);
    c.startMember(late);
    await late.daemon!.waitForMsg('accepted a tree; pulling pieces', { transfer }, 60_000);
    await late.daemon!.waitForMsg('received a tree', { transfer }, 60_000);
    const expected = underUmask(await listTree(source));
    expect(await listTree(`${finalPath(late, LATE, 'later')}/`)).toEqual(expected);
    const delivery = (await c.deliveries()).find((d) => d.transfer === transfer && d.member === late.id);
    expect(delivery?.state).toBe('delivered');
    // Every piece had holders (the four, lingering after placing): the late member took them from peers.
    expect(delivery!.bytesFromPeers).toBeGreaterThan(0);
    expect(late.daemon!.logs.some((l) => l.msg === 'peer link closed'), JSON.stringify(late.daemon!.logs.filter((l) => l.msg === 'peer link closed'))).toBe(false);
  });

  it('a member killed -9 mid-pull resumes from the pieces it held, takes fewer bytes than the tree, and ends identical', async () => {
    const source = join(await h.dir('src'), 'resumed');
    const size = await makeTree(source, 16 * MiB);
    const victim = members[2]!;
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'resumed' });
    // The server slowed (2 MB/s) so that the kill lands while the tree is still arriving.
    const ran = c.distribute(GROUP, [source, '--rate', '2M', '--timeout', '2m']);
    const transfer = String((await recorded).transfer);
    await waitUntil(async () => (await staged(victim, transfer)) >= 3 * MiB, 'the victim holding 3 MiB of the tree');
    await victim.daemon!.stop('SIGKILL');

    c.startMember(victim);
    const resumed = await victim.daemon!.waitForLog((l) => l.transfer === transfer
      && (l.msg === 'resuming a tree from held pieces' || l.msg === 'accepted a tree; pulling pieces'), 60_000);
    expect(resumed.msg).toBe('resuming a tree from held pieces');
    expect(Number(resumed.held)).toBeGreaterThan(0);
    await victim.daemon!.waitForMsg('received a tree', { transfer }, 120_000);
    expect((await ran).code).toBe(0);
    const expected = underUmask(await listTree(source));
    for (const m of members) expect(await listTree(`${finalPath(m, GROUP, 'resumed')}/`), m.name).toEqual(expected);
    // What the restarted member took, from anyone, is less than the tree: the pieces it held stayed.
    let taken: PeerStatus | undefined;
    await waitUntil(async () => {
      taken = await peerStatus(victim);
      return taken !== undefined && taken.fromServer + taken.fromPeers > 0;
    }, "the restarted member's status");
    expect(taken!.fromServer + taken!.fromPeers).toBeLessThan(size);
  });
  it('a tree of small files (pieces under MIN_PULLED_TREE_PIECE on average) is streamed to each member, not pulled', async () => {
    const source = join(await h.dir('src'), 'small');
    await mkdir(source);
    let size = 0;
    for (let i = 0; i < SMALL_FILES; i++) {
      const bytes = randomBytes(1024 + i * 100);
      await writeFile(join(source, `s${i}.txt`), bytes);
      size += bytes.length;
    }
    expect(size / SMALL_FILES).toBeLessThan(MIN_PULLED_TREE_PIECE);
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'small' });
    const received = members.map((m) => waitForNew(m.daemon!, 'received a tree', { file: 'small' }, 60_000));
    const ran = await c.distribute(GROUP, [source]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    const transfer = String((await recorded).transfer);
    await Promise.all(received);
    const deliveries = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(deliveries.map((d) => [d.state, d.bytesSent, d.bytesFromPeers])).toEqual(members.map(() => ['delivered', size, 0]));
    const accepts = members.map((m) => m.daemon!.logs.filter((l) => l.transfer === transfer && String(l.msg).startsWith('accepted a tree')).map((l) => l.msg));
    expect(accepts).toEqual(members.map(() => ['accepted a tree']));
  });
});
