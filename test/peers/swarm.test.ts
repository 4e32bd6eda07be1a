// Peer-assisted delivery on a namespace LAN: a server host and eight member hosts on one bridge, each
// host's link capped, real binaries on their default ports. Members pull verified pieces from each
// other; the server seeds about one copy; members that cannot reach each other get everything from the
// server; a member killed mid-transfer resumes from its pieces while the others finish.

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitUntil } from '../durability/cluster.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTopology, type Host, type Topology } from '../harness/netns.js';
import type { Daemon } from '../support/daemons.js';
import {
  CLIENT_BIN, distribute, idOf, Lan, multihostAvailable, randomFile, SERVER_BIN, sha256File, type Member,
} from '../multihost/support.js';
import { allocated, expectVerified as verified, revokeWhileFrozen } from './support.js';

const available = await multihostAvailable();
const MiB = 1024 * 1024;
const GROUP = 'Developers';
/** Each host's link towards it: slow enough that the server's uplink is the bottleneck without peers. */
const LINK_MBIT = 200;

describe.skipIf(!available)('peer-assisted delivery on a LAN', () => {
  const lan = new Lan();
  let topo: Topology;
  let serverHost: Host;
  let serverState: string;
  let serverId: string;
  let server: Daemon;
  let members: Member[];

  const startMember = (m: Member): Daemon => {
    m.daemon = lan.spawn(m.host, m.host.name, CLIENT_BIN, [
      '--join', GROUP, '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads,
      '--interface', m.host.ipv4!, '--name', m.host.name,
    ]);
    return m.daemon;
  };
  const online = (m: Member): Promise<unknown> => server.waitForMsg('member online', { member: m.id, address: m.host.ipv4 });

  /** Bytes the server sent for one transfer, over all its deliveries. */
  async function serverSent(transfer: string): Promise<number> {
    const result = await lan.run(serverHost, SERVER_BIN, ['status', '--json', '--state-dir', serverState]);
    const status = JSON.parse(result.stdout) as { transfers: Array<{ id: string; deliveries: Array<{ bytesSent: number }> }> };
    return (status.transfers.find((t) => t.id === transfer)?.deliveries ?? []).reduce((sum, d) => sum + d.bytesSent, 0);
  }

  async function send(name: string, size: number) {
    const path = join(serverState, name);
    const sha256 = await randomFile(path, size);
    const { code, summary } = await distribute(lan, serverHost, serverState, GROUP, [path], 120_000);
    return { code, summary, sha256, transfer: summary.transfers[0]!.id };
  }

  const expectVerified = (name: string, sha256: string, who = members): Promise<void> => verified(GROUP, name, sha256, who);

  beforeAll(async () => {
    topo = await createTopology({ hosts: 9, ipv6: false, prefix: 'peers' });
    const [h0, ...rest] = topo.hosts;
    serverHost = h0!;
    for (const host of topo.hosts) await host.limitRate(LINK_MBIT);
    serverState = await lan.dir('server');
    serverId = await idOf(lan, serverHost, SERVER_BIN, serverState);
    members = await Promise.all(rest.map((host) => lan.member(host)));
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: GROUP, members: members.map((m) => m.id) }] }));
    server = lan.spawn(serverHost, 'server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--interface', serverHost.ipv4!]);
    await server.waitForMsg('group-server started');
    for (const m of members) startMember(m);
    for (const m of members) await online(m);
  }, 120_000);

  afterAll(async () => {
    await lan.cleanup();
    await topo?.destroy();
  });

  it('8 members: every copy verified, and the server sent less than twice the file', async () => {
    const size = 32 * MiB;
    const { code, summary, sha256, transfer } = await send('swarm.bin', size);
    expect(code, JSON.stringify(summary)).toBe(0);
    await expectVerified('swarm.bin', sha256);
    expect(await serverSent(transfer)).toBeLessThan(2 * size);
  }, 180_000);

  it('a member killed mid-transfer: the others finish; restarted, it resumes from its pieces and verifies', async () => {
    const size = 48 * MiB;
    const victim = members[3]!;
    const path = join(serverState, 'killed.bin');
    const sha256 = await randomFile(path, size);
    const distributing = distribute(lan, serverHost, serverState, GROUP, [path], 120_000);
    await victim.daemon!.waitForMsg('accepted; pulling pieces', {}, 60_000);
    // Once it holds some pieces, kill it without warning.
    await waitUntil(async () => (await allocated(victim)) >= 8 * MiB, 'the victim holding 8 MiB of pieces');
    victim.daemon!.proc.kill('SIGKILL');
    await victim.daemon!.exited;
    const ran = await distributing;
    const others = members.filter((m) => m !== victim);
    await expectVerified('killed.bin', sha256, others);
    expect(ran.summary.deliveries.filter((d) => d.state === 'delivered'), JSON.stringify(ran.summary.deliveries.map((d) => [d.state, d.reason]))).toHaveLength(others.length);

    startMember(victim);
    const resumed = await victim.daemon!.waitForLog((l) => l.msg === 'resuming from held pieces' || l.msg === 'accepted; pulling pieces', 60_000);
    expect(resumed.msg).toBe('resuming from held pieces');
    expect(Number(resumed.held)).toBeGreaterThan(0);
    await victim.daemon!.waitForMsg('received', { file: 'killed.bin' }, 60_000);
    await expectVerified('killed.bin', sha256, [victim]);
  }, 180_000);

  it('a member revoked mid-transfer is dropped by its peers at once and gets nothing more', async () => {
    const revoked = members[5]!;
    const others = members.filter((m) => m !== revoked);
    const size = 48 * MiB;
    const path = join(serverState, 'revoked.bin');
    const sha256 = await randomFile(path, size);
    const distributing = distribute(lan, serverHost, serverState, GROUP, [path], 120_000);
    await revoked.daemon!.waitForMsg('accepted; pulling pieces', { file: 'revoked.bin' }, 60_000);
    await waitUntil(async () => (await allocated(revoked)) >= 4 * MiB, 'the revoked member holding 4 MiB of pieces');
    await revokeWhileFrozen(lan, serverHost, serverState, GROUP, revoked, others);
    // Thawed, it finds its server connection cut and its JOIN refused: revoked from its only group, it exits.
    expect(await revoked.daemon!.exited).toBe(77);
    const ran = await distributing;
    await expectVerified('revoked.bin', sha256, others);
    expect(ran.summary.deliveries.find((d) => d.member === revoked.id)?.state).toBe('failed');
    await expect(sha256File(join(revoked.downloads, GROUP, 'revoked.bin'))).rejects.toThrow();
    members = others;
  }, 180_000);

  it('members that cannot reach each other get everything from the server, verified', async () => {
    // Every member host refuses to route to every other member host: peer dials fail at once.
    for (const m of members) {
      for (const other of members) {
        if (other !== m) await m.host.exec('ip', ['route', 'add', 'prohibit', `${other.host.ipv4!}/32`]);
      }
    }
    const size = 8 * MiB;
    const { code, summary, sha256, transfer } = await send('alone.bin', size);
    expect(code, JSON.stringify(summary)).toBe(0);
    await expectVerified('alone.bin', sha256);
    expect(await serverSent(transfer)).toBe(members.length * size);
  }, 180_000);
});
