import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Capability, encodeFrame, FrameReader, type Frame } from '../../packages/shared/src/index.js';
import { harness } from '../support/daemons.js';
import { Cluster, finalPath, type Member } from '../durability/cluster.js';
import { connectAsMember, identityIn, joinAs } from '../security/tools.js';
import { listTree, makeSampleTree, underUmask } from './tree-fixtures.js';

/**
 * A member whose groupcast takes trees and serves peers but predates pulling trees (its HELLO says
 * pieces, peers and trees, not TREE_SWARM: PROTOCOL.md §7.7 *Pulled*) still gets a tree as a stream,
 * with no PEERS before its OFFER, while members that pull trees pull it from each other.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
let socket: TLSSocket | undefined;
/** The frame types the older member was sent, in order (PING left out), and the DATA offsets. */
const seen: string[] = [];
const offsets: number[] = [];
let members: Member[];

afterAll(async () => {
  socket?.destroy();
  await h.cleanup();
});

beforeAll(async () => {
  const identity = await identityIn(await h.dir('older'), 'older-member');
  const older: Member = { name: 'older', state: '', downloads: '', id: identity.signer.id, groups: [GROUP] };
  members = [await c.member('p0', [GROUP]), await c.member('p1', [GROUP])];
  const server = await c.startServer([{ name: GROUP, members: [...members, older] }]);
  const started = await server.waitForMsg('group-server started');
  await c.startOnline(members);
  await joinAs(identity.signer, GROUP, Number(c.port));
  const online = c.online(older);
  socket = connectAsMember(identity, Number(started.tcpPort), 'older', { flags: Capability.PIECES | Capability.PEERS | Capability.TREES, peerPort: 1 });
  const tls = socket;
  // Just enough of such a member: it takes the tree's stream from the start and says OK at its end.
  let size = 0;
  let got = 0;
  tls.pipe(new FrameReader((frame: Frame) => {
    if (frame.type === 'ping') {
      tls.write(encodeFrame({ type: 'pong', time: frame.time }));
      return;
    }
    if (seen.at(-1) !== frame.type) seen.push(frame.type);
    if (frame.type === 'offer') {
      size = frame.size;
      tls.write(encodeFrame({ type: 'accept', transfer: frame.transfer, offset: 0 }));
    }
    if (frame.type === 'data') {
      offsets.push(frame.offset);
      got += frame.payload.length;
      if (got === size) tls.write(encodeFrame({ type: 'result', transfer: frame.transfer, outcome: 0, message: '' }));
    }
  }));
  await online;
});

describe('a member that predates pulling trees', () => {
  it('gets the tree streamed (TREE, OFFER, DATA in order, no PEERS) while the others pull it', async () => {
    const source = join(await h.dir('src'), 'site');
    await makeSampleTree(source);
    const ran = await c.distribute(GROUP, [source]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    // After its HELLO and the reclaim request (a CANCEL of no transfer).
    expect(seen.filter((type) => type !== 'hello' && type !== 'cancel')).toEqual(['tree', 'offer', 'data']);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    expect(offsets[0]).toBe(0);
    const expected = underUmask(await listTree(source));
    for (const m of members) {
      expect(await listTree(`${finalPath(m, GROUP, 'site')}/`), m.name).toEqual(expected);
      expect(m.daemon!.logs.some((l) => l.msg === 'accepted a tree; pulling pieces'), m.name).toBe(true);
    }
  });
});
