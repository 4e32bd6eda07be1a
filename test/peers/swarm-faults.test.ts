// Faults in a swarm, on a namespace LAN of a server and twelve members, each host's link capped so a
// transfer lasts long enough to break: pulled deliveries do not wait on the stream slots
// (--concurrency 4, twelve members pull at once); a member that stops reading (SIGSTOP) holds nobody
// up and resumes when continued; a server killed mid-swarm resumes every member; a hostile member built
// from the shared codecs serves corrupted pieces, is dropped and reported, and every honest member
// ends verified.

import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateIdentity } from '../../packages/shared/src/index.js';
import { waitUntil } from '../durability/cluster.js';
import { createTopology, type Host, type Topology } from '../harness/netns.js';
import { serverStatus, until } from '../security/tools.js';
import type { Daemon } from '../support/daemons.js';
import {
  CLIENT_BIN, distribute, idOf, Lan, multihostAvailable, randomFile, SERVER_BIN, type Member,
} from '../multihost/support.js';
import { allocated, expectVerified as verified } from './support.js';

const available = await multihostAvailable();
const MiB = 1024 * 1024;
const GROUP = 'Developers';
const MEMBERS = 12;
/** Each host's link towards it: a copy from the server takes a few seconds, long enough to break things in. */
const LINK_MBIT = 100;
const HOSTILE = resolve(import.meta.dirname, 'hostile-peer.mjs');
const BAD_PIECE = 'peer sent a piece that does not match the manifest; dropped for this transfer';

describe.skipIf(!available)('faults in a swarm', () => {
  const lan = new Lan();
  let topo: Topology;
  let serverHost: Host;
  let hostileHost: Host;
  let serverState: string;
  let config: string;
  let serverId: string;
  let server: Daemon;
  let members: Member[];
  let hostileId: string;
  let hostileStateDir: string;

  const startServer = (): Daemon => {
    server = lan.spawn(serverHost, 'server', SERVER_BIN, [
      '--config', config, '--state-dir', serverState, '--interface', serverHost.ipv4!, '--concurrency', '4',
    ]);
    return server;
  };
  const startMember = (m: Member): Daemon => {
    m.daemon = lan.spawn(m.host, m.host.name, CLIENT_BIN, [
      '--join', GROUP, '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads,
      '--interface', m.host.ipv4!, '--name', m.host.name,
    ]);
    return m.daemon;
  };
  const online = (m: Member): Promise<unknown> => server.waitForMsg('member online', { member: m.id, address: m.host.ipv4 }, 60_000);
  const received = (m: Member, file: string, timeoutMs = 120_000): Promise<unknown> => m.daemon!.waitForMsg('received', { file }, timeoutMs);

  const expectVerified = (name: string, sha256: string, who = members): Promise<void> => verified(GROUP, name, sha256, who);

  async function file(name: string, size: number): Promise<{ path: string; sha256: string }> {
    const path = join(serverState, name);
    return { path, sha256: await randomFile(path, size) };
  }

  beforeAll(async () => {
    topo = await createTopology({ hosts: MEMBERS + 2, ipv6: false, prefix: 'swfault' });
    const [h0, h1, ...rest] = topo.hosts;
    serverHost = h0!;
    hostileHost = h1!;
    for (const host of topo.hosts) await host.limitRate(LINK_MBIT);
    serverState = await lan.dir('server');
    serverId = await idOf(lan, serverHost, SERVER_BIN, serverState);
    members = await Promise.all(rest.map((host) => lan.member(host)));
    hostileStateDir = await lan.dir('hostile');
    hostileId = (await loadOrCreateIdentity(hostileStateDir, 'hostile')).signer.id;
    config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: GROUP, members: [...members.map((m) => m.id), hostileId] }] }));
    startServer();
    await server.waitForMsg('group-server started');
    for (const m of members) startMember(m);
    for (const m of members) await online(m);
  }, 180_000);

  afterAll(async () => {
    await lan.cleanup();
    await topo?.destroy();
  });

  it('pulled deliveries do not take the stream slots: twelve members pull at once with --concurrency 4, and all verify', async () => {
    const { path, sha256 } = await file('wave.bin', 24 * MiB);
    const distributing = distribute(lan, serverHost, serverState, GROUP, [path], 150_000);
    // All twelve are being delivered at the same moment: none waits for a slot behind the others.
    const mostSending = await until(async () => {
      const status = await serverStatus(serverState);
      const deliveries = status.transfers.find((t) => t.name === 'wave.bin')?.deliveries ?? [];
      const sending = deliveries.filter((d) => d.state === 'sending').length;
      return sending === MEMBERS ? sending : undefined;
    }, 'every member being delivered at once', 60_000);
    expect(mostSending).toBe(MEMBERS);
    const { code, summary } = await distributing;
    expect(code, JSON.stringify(summary.deliveries.map((d) => [d.state, d.reason]))).toBe(0);
    await expectVerified('wave.bin', sha256);
  }, 180_000);

  it('a member that stops reading mid-swarm holds nobody up; continued, it resumes and verifies', async () => {
    const { path, sha256 } = await file('stopped.bin', 48 * MiB);
    const victim = members[4]!;
    const distributing = distribute(lan, serverHost, serverState, GROUP, [path], 150_000);
    await victim.daemon!.waitForMsg('accepted; pulling pieces', { file: 'stopped.bin' }, 60_000);
    await waitUntil(async () => (await allocated(victim)) >= 8 * MiB, 'the victim holding 8 MiB of pieces');
    victim.daemon!.proc.kill('SIGSTOP');
    try {
      const others = members.filter((m) => m !== victim);
      await Promise.all(others.map((m) => received(m, 'stopped.bin')));
      await expectVerified('stopped.bin', sha256, others);
    } finally {
      victim.daemon!.proc.kill('SIGCONT');
    }
    await received(victim, 'stopped.bin');
    await expectVerified('stopped.bin', sha256, [victim]);
    await distributing;
  }, 240_000);

  it('a server killed mid-swarm and restarted resumes every member to a verified file', async () => {
    const { path, sha256 } = await file('restart.bin', 48 * MiB);
    const distributing = distribute(lan, serverHost, serverState, GROUP, [path], 150_000);
    await waitUntil(async () => {
      const held = await Promise.all(members.map(allocated));
      return held.filter((bytes) => bytes >= 4 * MiB).length >= MEMBERS / 2;
    }, 'half the members holding 4 MiB of pieces');
    server.proc.kill('SIGKILL');
    await server.exited;
    startServer();
    await server.waitForMsg('group-server started');
    await Promise.all(members.map((m) => received(m, 'restart.bin', 150_000)));
    await expectVerified('restart.bin', sha256);
    // distribute waited for the daemon to come back and watched the swarm to its end.
    const { code, summary } = await distributing;
    expect(code).toBe(0);
    expect(summary.reconnects).toBe(1);
    const resumed = members.filter((m) => m.daemon!.logs.some((l) => l.msg === 'resuming from held pieces' && l.file === 'restart.bin'));
    expect(resumed.length).toBeGreaterThan(0);
  }, 240_000);

  it('a hostile member serving corrupted pieces is dropped, logged with its id and shown by status; every honest member verifies', async () => {
    const hostile = lan.spawn(hostileHost, 'hostile', HOSTILE, [JSON.stringify({
      stateDir: hostileStateDir, group: GROUP, server: serverHost.ipv4, tcpPort: 47701, udpPort: 47700, host: hostileHost.ipv4,
    })]);
    await hostile.waitForMsg('hostile connected', {}, 60_000);
    await server.waitForMsg('member online', { member: hostileId }, 60_000);
    const { path, sha256 } = await file('hostile.bin', 32 * MiB);
    const { summary } = await distribute(lan, serverHost, serverState, GROUP, [path], 150_000);
    await expectVerified('hostile.bin', sha256);
    const honest = summary.deliveries.filter((d) => d.member !== hostileId);
    expect(honest.filter((d) => d.state === 'delivered'), JSON.stringify(honest.map((d) => [d.state, d.reason]))).toHaveLength(MEMBERS);
    await hostile.waitForMsg('hostile served a corrupted piece', {}, 30_000);

    const caught = members.filter((m) => m.daemon!.logs.some((l) => l.msg === BAD_PIECE && l.file === 'hostile.bin'));
    expect(caught.length).toBeGreaterThan(0);
    for (const m of caught) {
      // Dropped for the transfer after its first bad piece: never linked to again for it.
      const lines = m.daemon!.logs.filter((l) => l.msg === BAD_PIECE && l.file === 'hostile.bin');
      expect(lines.map((l) => l.peer), m.host.name).toEqual([hostileId]);
      // ...and shown by `group-client status`, as text and as JSON.
      const text = await lan.run(m.host, CLIENT_BIN, ['status', '--state-dir', m.state]);
      expect(text.stdout).toContain('PEERS DROPPED FOR BAD PIECES');
      expect(text.stdout).toContain(hostileId);
      const json = await lan.run(m.host, CLIENT_BIN, ['status', '--json', '--state-dir', m.state]);
      const report = JSON.parse(json.stdout) as { status: { badPeers: { count: number; recent: Array<{ peer: string; name: string }> } } };
      expect(report.status.badPeers.count).toBeGreaterThanOrEqual(1);
      expect(report.status.badPeers.recent.some((b) => b.peer === hostileId && b.name === 'hostile.bin')).toBe(true);
    }
  }, 240_000);
});
