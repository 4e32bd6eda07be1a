import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Capability, encodeFrame, FrameReader, type Frame } from '../../packages/shared/src/index.js';
import { harness } from '../support/daemons.js';
import { Cluster, type Member } from '../durability/cluster.js';
import { connectAsMember, identityIn, joinAs } from '../security/tools.js';
import { makeSampleTree } from './tree-fixtures.js';

/**
 * A member whose groupcast predates trees (its HELLO says pieces but not TREES, PROTOCOL.md §7.7) is
 * never offered one: that delivery fails for good with a reason that says what to do, and the same
 * member still gets single files.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let socket: TLSSocket | undefined;
const offered: Array<Extract<Frame, { type: 'offer' }>> = [];
let treeParts = 0;

afterAll(async () => {
  socket?.destroy();
  await h.cleanup();
});

let old: Member;

beforeAll(async () => {
  const identity = await identityIn(await h.dir('old'), 'old-member');
  old = { name: 'old', state: '', downloads: '', id: identity.signer.id, groups: [GROUP] };
  const server = await c.startServer([{ name: GROUP, members: [old] }]);
  const started = await server.waitForMsg('group-server started');
  // It joins as any member does, so the group's distributions are for it.
  await joinAs(identity.signer, GROUP, Number(c.port));
  const online = c.online(old);
  socket = connectAsMember(identity, Number(started.tcpPort), 'old', { flags: Capability.PIECES, peerPort: 0 });
  const tls = socket;
  // Just enough of an old member: it takes a single file whole and says OK.
  tls.pipe(new FrameReader((frame) => {
    if (frame.type === 'tree') treeParts++;
    if (frame.type === 'ping') tls.write(encodeFrame({ type: 'pong', time: frame.time }));
    if (frame.type === 'offer') {
      offered.push(frame);
      tls.write(encodeFrame({ type: 'accept', transfer: frame.transfer, offset: frame.size }));
      tls.write(encodeFrame({ type: 'result', transfer: frame.transfer, outcome: 0, message: '' }));
    }
  }));
  await online;
});

describe('a member that cannot take trees', () => {
  it('is never offered one: the delivery fails for good, saying to upgrade it', async () => {
    const source = join(await h.dir('src'), 'site');
    await makeSampleTree(source);
    const ran = await c.distribute(GROUP, [source, '--json']);
    expect(ran.code, ran.stdout + ran.stderr).toBe(1);
    const result = JSON.parse(ran.stdout) as { deliveries: Array<{ state: string; reason: string; attempts: number }> };
    expect(result.deliveries).toMatchObject([{ state: 'failed', reason: "member's groupcast cannot receive directories; upgrade it" }]);
    expect(treeParts).toBe(0);
    expect(offered).toEqual([]);
    expect(await c.statusText()).toContain('cannot receive directories');
    // A single file still goes to it.
    const file = join(source, 'a', 'notes.txt');
    const single = await c.distribute(GROUP, [file, '--json']);
    expect(single.code, single.stdout + single.stderr).toBe(0);
    expect(offered.map((o) => o.name)).toEqual(['notes.txt']);
  });
});
