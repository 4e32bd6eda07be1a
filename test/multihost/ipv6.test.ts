// IPv6-only hosts (no IPv4 at all): discovery on the site-local scoped group ff15::77, joins, the TLS
// data plane and the --server fallback over IPv6 — first with ULAs, then with link-local addresses
// only, as on a LAN with no router handing out prefixes (addresses there only mean something with
// their interface, fe80::1%eth0).

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTopology, type Host, type Topology } from '../harness/netns.js';
import type { Daemon } from '../support/daemons.js';
import {
  CLIENT_BIN, distribute, idOf, Lan, multihostAvailable, randomFile, SERVER_BIN, sha256File,
  type Member,
} from './support.js';

const available = await multihostAvailable();

const GROUP6 = ['--group-address', 'ff15::77'];

/** The host's link-local address on its bridge interface, as `ip` shows it (no scope). */
async function linkLocal(host: Host): Promise<string> {
  const out = await host.exec('ip', ['-6', '-o', 'addr', 'show', 'dev', host.ifname, 'scope', 'link']);
  const match = /inet6 (fe80:[0-9a-f:]+)\//.exec(out.stdout);
  if (!match?.[1]) throw new Error(`${host.name} has no link-local address: ${out.stdout}`);
  return match[1];
}

/** One topology, one server on h0 and members on the other hosts, all IPv6-only. */
function ipv6Lan(prefix: string, hosts: number, setup?: (topo: Topology) => Promise<void>) {
  const lan = new Lan();
  const ctx = {} as { topo: Topology; serverHost: Host; serverState: string; serverId: string; server: Daemon; members: Member[] };
  beforeAll(async () => {
    ctx.topo = await createTopology({ hosts, ipv4: false, prefix });
    await setup?.(ctx.topo);
    ctx.serverHost = ctx.topo.hosts[0]!;
    ctx.serverState = await lan.dir('server');
    ctx.serverId = await idOf(lan, ctx.serverHost, SERVER_BIN, ctx.serverState);
    ctx.members = [];
    for (const host of ctx.topo.hosts.slice(1)) ctx.members.push(await lan.member(host));
    const config = join(ctx.serverState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: ctx.members.map((m) => m.id) }] }));
    // The interface by name: the server picks the address itself.
    ctx.server = lan.spawn(ctx.serverHost, 'server', SERVER_BIN, [
      '--config', config, '--state-dir', ctx.serverState, '--interface', ctx.serverHost.ifname, ...GROUP6,
    ]);
    await ctx.server.waitForMsg('group-server started');
  });
  afterAll(async () => {
    await lan.cleanup();
    await ctx.topo?.destroy();
  });
  const startMember = (m: Member, args: string[]): Daemon => {
    m.daemon = lan.spawn(m.host, m.host.name, CLIENT_BIN, [
      '--join', 'Developers', '--server-id', ctx.serverId, '--state-dir', m.state, '--downloads', m.downloads, ...GROUP6, ...args,
    ]);
    return m.daemon;
  };
  return { lan, ctx, startMember };
}

describe.skipIf(!available)('an IPv6-only LAN', () => {
  const { lan, ctx, startMember } = ipv6Lan('ipv6', 3);

  it('lists groups over ff15::77 and over unicast IPv6 (--server [v6]:port)', async () => {
    const [m1, m2] = ctx.members as [Member, Member];
    const multicast = await lan.run(m1.host, CLIENT_BIN, ['groups', '--json', ...GROUP6, '--interface', m1.host.ipv6!]);
    expect(multicast.code, multicast.stderr).toBe(0);
    expect(JSON.parse(multicast.stdout)).toMatchObject({ server: { id: ctx.serverId, address: ctx.serverHost.ipv6 } });

    await m2.host.blockMulticast();
    const unicast = await lan.run(m2.host, CLIENT_BIN, ['groups', '--json', ...GROUP6, '--interface', m2.host.ifname, '--server', `[${ctx.serverHost.ipv6}]:47700`]);
    expect(unicast.code, unicast.stderr).toBe(0);
    expect(JSON.parse(unicast.stdout)).toMatchObject({ server: { id: ctx.serverId, address: ctx.serverHost.ipv6 } });
  });

  it('joins and delivers over IPv6, one member by multicast and one through --server', async () => {
    const [m1, m2] = ctx.members as [Member, Member];
    startMember(m1, ['--interface', m1.host.ipv6!]);
    startMember(m2, ['--interface', m2.host.ifname, '--server', ctx.serverHost.ipv6!]);
    for (const m of [m1, m2]) {
      await m.daemon!.waitForMsg('joined', { group: 'Developers' });
      await ctx.server.waitForMsg('member online', { member: m.id, address: m.host.ipv6 });
    }
    const file = join(ctx.serverState, 'v6.bin');
    const sha256 = await randomFile(file, 2 * 1024 * 1024);
    const { code, summary } = await distribute(lan, ctx.serverHost, ctx.serverState, 'Developers', [file]);
    expect(code, JSON.stringify(summary)).toBe(0);
    for (const m of [m1, m2]) expect(await sha256File(join(m.downloads, 'Developers', 'v6.bin'))).toBe(sha256);
  });
});

describe.skipIf(!available)('an IPv6 LAN with link-local addresses only', () => {
  // Without the ULAs every host has only its fe80:: address, which needs the interface to mean anything.
  const { lan, ctx, startMember } = ipv6Lan('ll', 2, async (topo) => {
    for (const host of topo.hosts) await host.exec('ip', ['-6', 'addr', 'flush', 'dev', host.ifname, 'scope', 'global']);
  });

  it('discovers, joins, connects and delivers using scoped link-local addresses', async () => {
    const [m1] = ctx.members as [Member];
    const serverLinkLocal = await linkLocal(ctx.serverHost);
    startMember(m1, ['--interface', m1.host.ifname]);
    const found = await m1.daemon!.waitForMsg('server found');
    expect(found.address).toBe(`${serverLinkLocal}%${m1.host.ifname}`);
    await m1.daemon!.waitForMsg('joined', { group: 'Developers' });
    await ctx.server.waitForMsg('member online', { member: m1.id });
    const file = join(ctx.serverState, 'll.bin');
    const sha256 = await randomFile(file, 1024 * 1024);
    const { code, summary } = await distribute(lan, ctx.serverHost, ctx.serverState, 'Developers', [file]);
    expect(code, JSON.stringify(summary)).toBe(0);
    expect(await sha256File(join(m1.downloads, 'Developers', 'll.bin'))).toBe(sha256);
  });
});
