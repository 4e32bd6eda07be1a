// Self-test of the namespace harness: the network it builds behaves like a small LAN, its faults
// do what they say, and it cleans up after itself.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTopology,
  netnsAvailable,
  removeStaleNamespaces,
  type Host,
  type Topology,
} from './netns.js';

const AGENT = fileURLToPath(new URL('./netns-agent.mjs', import.meta.url));
const GROUP4 = '239.255.77.77';
const GROUP6 = 'ff15::77';
const WAIT_MS = 5_000;

const availability = await netnsAvailable();
if (!availability.ok) console.warn(`[netns] skipped: ${availability.reason}`);

interface AgentEvent {
  ev: string;
  id?: string;
  data?: string;
  n?: number;
  message?: string;
}

/** Drives one netns-agent process inside a host. */
class Agent {
  readonly events: AgentEvent[] = [];
  readonly child;
  private readonly waiters = new Set<() => void>();

  constructor(readonly host: Host) {
    this.child = host.spawn(process.execPath, [AGENT], { stdio: ['pipe', 'pipe', 'inherit'] });
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.events.push(JSON.parse(line) as AgentEvent);
      for (const wake of this.waiters) wake();
    });
  }

  send(cmd: Record<string, unknown>): void {
    this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
  }

  has(pred: (e: AgentEvent) => boolean): boolean {
    return this.events.some(pred);
  }

  waitFor(pred: (e: AgentEvent) => boolean, what: string, timeoutMs = WAIT_MS): Promise<AgentEvent> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = this.events.find(pred);
        if (hit) done(() => resolve(hit));
      };
      const timer = setTimeout(() => {
        const errors = this.events.filter((e) => e.ev === 'error').map((e) => e.message);
        done(() => reject(new Error(`${this.host.name}: no ${what} within ${timeoutMs} ms; errors: ${errors.join('; ')}`)));
      }, timeoutMs);
      const done = (settle: () => void): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        settle();
      };
      this.waiters.add(check);
      check();
    });
  }

  ready(id: string): Promise<AgentEvent> {
    return this.waitFor((e) => e.ev === 'ready' && e.id === id, `ready of ${id}`);
  }

  /** A datagram on listener `id` whose payload starts with `tag` (and, given `atLeast`, has seq >= it). */
  received(id: string, tag: string, atLeast = 1): (e: AgentEvent) => boolean {
    return (e) =>
      e.ev === 'udp' && e.id === id && e.data?.startsWith(`${tag} `) === true && Number(e.data.slice(tag.length + 1)) >= atLeast;
  }
}

function tcpData(id: string, text: string): (e: AgentEvent) => boolean {
  return (e) => e.ev === 'tcp-data' && e.id === id && e.data?.includes(text) === true;
}

async function netnsList(): Promise<string> {
  const child = spawn('ip', ['netns', 'list'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  await once(child, 'close');
  return out;
}

describe.skipIf(!availability.ok)('netns harness', () => {
  let topo: Topology;
  let h0: Agent;
  let h1: Agent;
  let h2: Agent;

  beforeAll(async () => {
    topo = await createTopology({ hosts: 3, prefix: 'selftest' });
    [h0, h1, h2] = topo.hosts.map((h) => new Agent(h)) as [Agent, Agent, Agent];
  }, 20_000);

  afterAll(async () => {
    await topo?.destroy();
  });

  it('gives every host its own namespace, interface and addresses on one subnet', async () => {
    const list = await netnsList();
    for (const host of topo.hosts) {
      expect(list).toContain(host.ns);
      const addrs = await host.exec('ip', ['-o', 'addr', 'show', 'dev', host.ifname]);
      expect(addrs.stdout).toContain(`${host.ipv4}/24`);
      expect(addrs.stdout).toContain(`${host.ipv6}/64`);
      const routes = await host.exec('ip', ['route', 'show', '224.0.0.0/4']);
      expect(routes.stdout).toContain(`dev ${host.ifname}`);
    }
    expect(list).toContain(topo.bridgeNs);
    expect(new Set(topo.hosts.map((h) => h.ipv4)).size).toBe(3);
  });

  it('carries TCP between hosts over IPv4 and IPv6', async () => {
    h1.send({ op: 'tcp-echo', id: 'echo6', family: 6, port: 47710 });
    await h1.ready('echo6');
    h0.send({ op: 'tcp-connect', id: 'c4', host: h1.host.ipv4, port: 47710 });
    h0.send({ op: 'tcp-connect', id: 'c6', host: h1.host.ipv6, port: 47710 });
    await Promise.all([h0.ready('c4'), h0.ready('c6')]);
    h0.send({ op: 'tcp-write', id: 'c4', data: 'hello-v4' });
    h0.send({ op: 'tcp-write', id: 'c6', data: 'hello-v6' });
    await h0.waitFor(tcpData('c4', 'hello-v4'), 'IPv4 echo');
    await h0.waitFor(tcpData('c6', 'hello-v6'), 'IPv6 echo');
  });

  it('delivers IPv4 multicast from h0 to h1 and h2', async () => {
    for (const a of [h1, h2]) a.send({ op: 'udp-listen', id: 'm4', family: 4, port: 47720, group: GROUP4, iface: a.host.ipv4 });
    await Promise.all([h1.ready('m4'), h2.ready('m4')]);
    h0.send({ op: 'udp-send', id: 's4', family: 4, host: GROUP4, port: 47720, iface: h0.host.ipv4, data: 'mc4', count: 250, intervalMs: 20 });
    await Promise.all([h1.waitFor(h1.received('m4', 'mc4'), 'mc4'), h2.waitFor(h2.received('m4', 'mc4'), 'mc4')]);
    h0.send({ op: 'close', id: 's4' });
  });

  it('delivers IPv6 multicast from h0 to h1 and h2', async () => {
    const iface = `::%${h0.host.ifname}`;
    for (const a of [h1, h2]) a.send({ op: 'udp-listen', id: 'm6', family: 6, port: 47721, group: GROUP6, iface });
    await Promise.all([h1.ready('m6'), h2.ready('m6')]);
    h0.send({ op: 'udp-send', id: 's6', family: 6, host: GROUP6, port: 47721, iface, data: 'mc6', count: 250, intervalMs: 20 });
    await Promise.all([h1.waitFor(h1.received('m6', 'mc6'), 'mc6'), h2.waitFor(h2.received('m6', 'mc6'), 'mc6')]);
    h0.send({ op: 'close', id: 's6' });
  });

  it('cutLink stalls traffic to a host and restoreLink lets a TCP connection recover', async () => {
    h1.send({ op: 'tcp-echo', id: 'echo', family: 4, port: 47730 });
    h1.send({ op: 'udp-listen', id: 'u', family: 4, port: 47731 });
    h2.send({ op: 'udp-listen', id: 'u', family: 4, port: 47731 });
    await Promise.all([h1.ready('echo'), h1.ready('u'), h2.ready('u')]);
    h0.send({ op: 'tcp-connect', id: 'c', host: h1.host.ipv4, port: 47730 });
    await h0.ready('c');
    h0.send({ op: 'tcp-write', id: 'c', data: 'before-cut' });
    await h0.waitFor(tcpData('c', 'before-cut'), 'echo before the cut');

    await h1.host.cutLink();
    h0.send({ op: 'tcp-write', id: 'c', data: 'during-cut' });
    for (const a of [h1, h2]) {
      h0.send({ op: 'udp-send', id: `cut-${a.host.name}`, family: 4, host: a.host.ipv4, port: 47731, data: 'cut', count: 250, intervalMs: 20 });
    }
    // h2 hearing 15 datagrams is the clock: h1 heard none in the same time, nor did the echo come back.
    await h2.waitFor(h2.received('u', 'cut', 15), 'control datagrams to h2');
    expect(h1.has(h1.received('u', 'cut'))).toBe(false);
    expect(h0.has(tcpData('c', 'during-cut'))).toBe(false);

    await h1.host.restoreLink();
    await h0.waitFor(tcpData('c', 'during-cut'), 'echo after restoreLink', 10_000);
    await h1.waitFor(h1.received('u', 'cut'), 'datagrams after restoreLink');
    h0.send({ op: 'tcp-write', id: 'c', data: 'after-restore' });
    await h0.waitFor(tcpData('c', 'after-restore'), 'echo after restore');
    for (const a of [h1, h2]) h0.send({ op: 'close', id: `cut-${a.host.name}` });
  }, 20_000);

  it('blockMulticast drops multicast to and from a host while unicast still flows', async () => {
    await h1.host.blockMulticast();
    const routes = await h1.host.exec('ip', ['route', 'show', '224.0.0.0/4']);
    expect(routes.stdout.trim()).toBe('');

    const iface6 = (a: Agent): string => `::%${a.host.ifname}`;
    const send = (a: Agent, id: string, extra: Record<string, unknown>): void =>
      a.send({ op: 'udp-send', id, count: 250, intervalMs: 20, ...extra });
    // inbound: h0 multicasts; h2 is the positive control, h1 unicast proves h1 is reachable
    send(h0, 'bin4', { family: 4, host: GROUP4, port: 47720, iface: h0.host.ipv4, data: 'in4' });
    send(h0, 'bin6', { family: 6, host: GROUP6, port: 47721, iface: iface6(h0), data: 'in6' });
    send(h0, 'buni', { family: 4, host: h1.host.ipv4, port: 47731, data: 'uni' });
    // outbound: h1 multicasts with the interface set explicitly, which bypasses the routing table
    send(h1, 'bout4', { family: 4, host: GROUP4, port: 47720, iface: h1.host.ipv4, data: 'out4' });
    send(h1, 'bout6', { family: 6, host: GROUP6, port: 47721, iface: iface6(h1), data: 'out6' });

    await Promise.all([
      h2.waitFor(h2.received('m4', 'in4', 15), 'IPv4 multicast at h2'),
      h2.waitFor(h2.received('m6', 'in6', 15), 'IPv6 multicast at h2'),
      h1.waitFor(h1.received('u', 'uni', 15), 'unicast at h1'),
      ...['bout4', 'bout6'].map((id) =>
        h1.waitFor((e) => e.ev === 'sent' && e.id === id && (e.n ?? 0) >= 15, `h1 sending ${id}`),
      ),
    ]);
    expect(h1.has(h1.received('m4', 'in4'))).toBe(false);
    expect(h1.has(h1.received('m6', 'in6'))).toBe(false);
    expect(h2.has(h2.received('m4', 'out4'))).toBe(false);
    expect(h2.has(h2.received('m6', 'out6'))).toBe(false);

    await h1.host.unblockMulticast();
    await Promise.all([
      h1.waitFor(h1.received('m4', 'in4'), 'IPv4 multicast at h1 after unblock'),
      h1.waitFor(h1.received('m6', 'in6'), 'IPv6 multicast at h1 after unblock'),
      h2.waitFor(h2.received('m4', 'out4'), 'IPv4 multicast from h1 after unblock'),
      h2.waitFor(h2.received('m6', 'out6'), 'IPv6 multicast from h1 after unblock'),
    ]);
    const restored = await h1.host.exec('ip', ['route', 'show', '224.0.0.0/4']);
    expect(restored.stdout).toContain(`dev ${h1.host.ifname}`);
    for (const id of ['bin4', 'bin6', 'buni']) h0.send({ op: 'close', id });
    for (const id of ['bout4', 'bout6']) h1.send({ op: 'close', id });
  }, 20_000);

  it('removes namespaces left by a dead creator', async () => {
    const dead = spawn(process.execPath, ['-e', '']);
    await once(dead, 'exit');
    const orphan = `gcns-${dead.pid}-deadbeef-h0`;
    const add = spawn('ip', ['netns', 'add', orphan]);
    expect((await once(add, 'exit'))[0]).toBe(0);
    expect(await removeStaleNamespaces()).toContain(orphan);
    expect(await netnsList()).not.toContain(orphan);
  });

  it('destroy kills spawned processes and leaves no namespace behind, twice over', async () => {
    const names = [topo.bridgeNs, ...topo.hosts.map((h) => h.ns)];
    const exits = [h0, h1, h2].map((a) =>
      a.child.exitCode === null && a.child.signalCode === null ? once(a.child, 'exit') : undefined,
    );
    await topo.destroy();
    await topo.destroy();
    await Promise.all(exits);
    for (const a of [h0, h1, h2]) expect(a.child.signalCode).toBe('SIGKILL');
    const list = await netnsList();
    for (const name of names) expect(list).not.toContain(name);
  });
});
