// A small IPv4 LAN of network namespaces: one server host, five member hosts, a host that is on the
// bridge but not in the group, a host whose multicast is blocked (it finds the server with --server),
// and a host that joins after the distribution. Real binaries, default ports, one bridge.

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTopology, type Host, type Topology } from '../harness/netns.js';
import type { Daemon } from '../support/daemons.js';
import {
  CLIENT_BIN, distribute, idOf, Lan, listFiles, multihostAvailable, randomFile, SERVER_BIN, sha256File,
  type Member,
} from './support.js';

const available = await multihostAvailable();

describe.skipIf(!available)('a LAN of hosts (IPv4)', () => {
  const lan = new Lan();
  let topo: Topology;
  let serverHost: Host;
  let serverState: string;
  let serverId: string;
  let server: Daemon;
  /** h1..h5: members of Developers from the start. */
  let members: Member[];
  /** h6: allowed only in Designers; asks for Developers too and is refused. */
  let outsider: Member;
  /** h7: multicast blocked at the bridge; finds the server with --server. */
  let blocked: Member;
  /** h8: allowed in Developers, starts only after the distribution. */
  let late: Member;
  let payload: { path: string; sha256: string };

  const startClient = (m: Member, groups: string[], extra: string[] = []): Daemon => {
    m.daemon = lan.spawn(m.host, m.host.name, CLIENT_BIN, [
      ...groups.flatMap((g) => ['--join', g]), '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads,
      '--interface', m.host.ipv4!, '--name', m.host.name, ...extra,
    ]);
    return m.daemon;
  };

  const online = (m: Member): Promise<unknown> => server.waitForMsg('member online', { member: m.id, address: m.host.ipv4 });

  beforeAll(async () => {
    topo = await createTopology({ hosts: 9, ipv6: false, prefix: 'lan' });
    const [h0, ...rest] = topo.hosts;
    serverHost = h0!;
    serverState = await lan.dir('server');
    serverId = await idOf(lan, serverHost, SERVER_BIN, serverState);
    const all = await Promise.all(rest.map((host) => lan.member(host)));
    members = all.slice(0, 5);
    [outsider, blocked, late] = all.slice(5) as [Member, Member, Member];
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({
      groups: [
        { name: 'Developers', members: [...members, blocked, late].map((m) => m.id) },
        { name: 'Designers', members: [outsider.id] },
      ],
    }));
    server = lan.spawn(serverHost, 'server', SERVER_BIN, [
      '--config', config, '--state-dir', serverState, '--interface', serverHost.ipv4!, '--name', 'office',
    ]);
    await server.waitForMsg('group-server started');
    payload = { path: join(serverState, 'release.bin'), sha256: '' };
    payload.sha256 = await randomFile(payload.path, 4 * 1024 * 1024);
  });

  afterAll(async () => {
    await lan.cleanup();
    await topo?.destroy();
  });

  it('lets members on other hosts discover the server by multicast and join', async () => {
    const listed = await lan.run(members[0]!.host, CLIENT_BIN, ['groups', '--json', '--interface', members[0]!.host.ipv4!]);
    expect(listed.code, listed.stderr).toBe(0);
    const listing = JSON.parse(listed.stdout) as { server: { id: string; address: string }; groups: Array<{ name: string }> };
    expect(listing.server).toMatchObject({ id: serverId, address: serverHost.ipv4 });
    expect(listing.groups.map((g) => g.name)).toEqual(['Developers', 'Designers']);

    for (const m of members) startClient(m, ['Developers']);
    startClient(outsider, ['Developers', 'Designers']);
    for (const m of members) {
      const found = await m.daemon!.waitForMsg('server found');
      expect(found.address).toBe(serverHost.ipv4);
      await m.daemon!.waitForMsg('joined', { group: 'Developers' });
      await online(m);
    }
    const refused = await outsider.daemon!.waitForLog((l) => l.msg === 'join refused' && l.group === 'Developers');
    expect(refused.reason).toBe('not authorized');
    await outsider.daemon!.waitForMsg('joined', { group: 'Designers' });
    await online(outsider);
  });

  it('lists, joins and connects through --server when multicast does not reach the host', async () => {
    await blocked.host.blockMulticast();
    const iface = ['--interface', blocked.host.ipv4!];
    const unreached = await lan.run(blocked.host, CLIENT_BIN, ['groups', '--timeout', '1s', ...iface]);
    expect(unreached.code).toBe(1);
    expect(unreached.stderr).toMatch(/no server answered/);

    const listed = await lan.run(blocked.host, CLIENT_BIN, ['groups', '--json', '--server', serverHost.ipv4!, ...iface]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toMatchObject({ server: { id: serverId, address: serverHost.ipv4 } });

    startClient(blocked, ['Developers'], ['--server', serverHost.ipv4!]);
    await blocked.daemon!.waitForMsg('joined', { group: 'Developers' });
    await online(blocked);
  });

  it('distributes to every member host, verified, and nothing to the host outside the group', async () => {
    const { code, summary } = await distribute(lan, serverHost, serverState, 'Developers', [payload.path]);
    expect(code, JSON.stringify(summary)).toBe(0);
    const receivers = [...members, blocked];
    expect(summary.deliveries.map((d) => d.member).sort()).toEqual(receivers.map((m) => m.id).sort());
    expect(summary.deliveries.every((d) => d.state === 'delivered')).toBe(true);
    for (const m of receivers) {
      const path = join(m.downloads, 'Developers', 'release.bin');
      expect(await sha256File(path)).toBe(payload.sha256);
      expect(await listFiles(m.downloads)).toEqual([path]);
    }
    expect(await listFiles(outsider.downloads)).toEqual([]);
    expect(outsider.daemon!.logs.some((l) => l.msg === 'offer')).toBe(false);
  });

  it('gives a host that joins after the distribution the file (backfill)', async () => {
    startClient(late, ['Developers']);
    await late.daemon!.waitForMsg('joined', { group: 'Developers' });
    const queued = await server.waitForMsg('backlog queued for new member', { member: late.id });
    expect(queued.deliveries).toBe(1);
    const received = await late.daemon!.waitForMsg('received', { sha256: payload.sha256 });
    expect(received.path).toBe(join(late.downloads, 'Developers', 'release.bin'));
    expect(await sha256File(join(late.downloads, 'Developers', 'release.bin'))).toBe(payload.sha256);
    expect(await listFiles(outsider.downloads)).toEqual([]);
  });
});
