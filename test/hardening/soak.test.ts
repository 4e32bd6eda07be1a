import { createHash, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, type Identity } from '../../packages/shared/src/index.js';
import { callDaemon } from '../../packages/server/src/operator/control-socket.js';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort, type Daemon } from '../support/daemons.js';
import { writeRandomFile } from '../durability/cluster.js';
import { craft, freshSigner, identityIn, joinAs, Udp } from '../security/tools.js';
import { HostileLink, MiB, restartServer, rssOf, startMember, startServer, type Server } from './session-tools.js';

/**
 * Everything at once: a LIST flood, a JOIN flood of fresh keys into an open group, garbage datagrams,
 * members that accept an offer and stop reading, a member that floods PINGs without reading, and a
 * server restart in the middle. Through all of it the honest members keep receiving every
 * distribution, verified, and the server's memory stays under a stated bound.
 *
 * A round lasts as long as the stallers' five attempts at its file (distribute waits for them to fail),
 * so the server's deadlines are shortened — the progress window (GC_PROGRESS_WINDOW_MS), the retry
 * backoff (GC_RETRY_BASE_MS) and --heartbeat-timeout — and a round takes about 20 s instead of a minute:
 * two rounds, the restart between them, each staller connecting about ten times. Every loop here stops
 * when the rounds are done, at SOAK_MS, or at its own count, whichever comes first.
 */
const h = harness();
/** A bound, not the plan: the rounds normally end the soak well before it. */
const SOAK_MS = 150_000;
const ROUNDS = 2;
const FILE_SIZE = 6 * MiB;
const HONEST = 3;
const STALLED = 2;
/** What the server may reach under all of this; it idles at about 80 MiB. */
const RSS_BOUND = 300 * MiB;
const OPEN_CAP = 50;
const LIST_FLOOD = 20_000;
const JOIN_FLOOD = 2_000;
const PING_FLOOD_BYTES = 32 * MiB;
const PING_BYTES = encodeFrame({ type: 'ping', time: 0 }).length;

const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');

describe('soak: floods, stalled members and a restart at once', () => {
  let server: Server;
  const honest: Array<{ name: string; daemon: Daemon; downloads: string }> = [];
  let attackers: Identity[];
  let honestIds: string[];
  let flooder: Identity;
  let over = false;
  let endSoak = (): void => undefined;
  const soakOver = new Promise<void>((resolve) => {
    endSoak = () => {
      over = true;
      resolve();
    };
  });
  const timers: NodeJS.Timeout[] = [];
  const links = new Set<HostileLink>();
  let peakRss = 0;

  const stopped = (): boolean => over;

  beforeAll(async () => {
    const honestStates = await Promise.all(Array.from({ length: HONEST }, (_, i) => h.dir(`honest-${i}-state`)));
    honestIds = await Promise.all(honestStates.map((state) => idOf(h, CLIENT_BIN, state)));
    attackers = await Promise.all(Array.from({ length: STALLED }, async (_, i) => identityIn(await h.dir(`stall-${i}`), `stall-${i}`)));
    flooder = await identityIn(await h.dir('flooder'), 'flooder');
    // A fixed TCP port, so that members and attackers find the restarted server where it was.
    server = await startServer(h, [
      { name: 'Developers', members: [...honestIds, ...attackers.map((a) => a.signer.id), flooder.signer.id] },
      { name: 'Lobby', members: [], open: true },
    ], ['--concurrency', '3', '--max-open-members', String(OPEN_CAP), '--heartbeat-timeout', '5s'],
    { GC_PROGRESS_WINDOW_MS: '1000', GC_RETRY_BASE_MS: '100' }, testPort());
    for (const [i, state] of honestStates.entries()) {
      const downloads = await h.dir(`honest-${i}-dl`);
      const name = `honest-${i}`;
      honest.push({ name, downloads, daemon: startMember(h, server, name, state, downloads, ['Developers']) });
    }
    for (const [i] of honestStates.entries()) await server.daemon.waitForMsg('member online', { member: honestIds[i] }, 30_000);
  });

  afterAll(async () => {
    endSoak();
    for (const timer of timers) clearInterval(timer);
    for (const link of links) link.destroy();
    await h.cleanup();
  });

  /** Keeps a hostile data connection up until the soak ends, reconnecting whenever the server drops it. */
  async function persist(identity: Identity, behave: (link: HostileLink) => void): Promise<number> {
    let connections = 0;
    while (!stopped()) {
      const link = await HostileLink.open(server.tcpPort, identity).catch(() => undefined);
      if (link) {
        connections++;
        links.add(link);
        behave(link);
        await Promise.race([link.whenClosed(SOAK_MS + 60_000).catch(() => undefined), soakOver]);
        link.destroy();
        links.delete(link);
      }
      // The server may be restarting: try again shortly, as a real attacker would.
      if (!stopped()) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return connections;
  }

  /**
   * Accepts every offer from 0 and then reads nothing, PINGing four times a second so it never looks
   * dead (and, not reading, learns from a failed write soon after the server dropped it).
   */
  function stall(link: HostileLink): void {
    link.hello('staller');
    const pinger = setInterval(() => link.send({ type: 'ping', time: Date.now() }), 250);
    timers.push(pinger);
    link.socket.once('close', () => clearInterval(pinger));
    void link.frame('offer', SOAK_MS + 60_000).then((offer) => {
      link.send({ type: 'accept', transfer: offer.transfer, offset: 0 });
      link.stopReading();
    }, () => undefined);
  }

  /** Says HELLO, never reads, and writes PINGs as fast as its own socket takes them, up to a byte budget. */
  function pingFlood(budget: { left: number }): (link: HostileLink) => void {
    return (link) => {
      link.hello('flooder');
      link.stopReading();
      const flooding = (): boolean => !link.closed && !stopped() && budget.left > 0;
      const ping = (): void => {
        while (flooding() && link.socket.writableLength < MiB) {
          link.send({ type: 'ping', time: Date.now() });
          budget.left -= PING_BYTES;
        }
        if (flooding()) link.socket.once('drain', ping);
      };
      ping();
    };
  }

  async function listFlood(): Promise<{ sent: number; sentBytes: number; answeredBytes: number }> {
    const udp = await Udp.open('127.0.0.9');
    let sent = 0;
    let sentBytes = 0;
    try {
      while (!stopped() && sent < LIST_FLOOD) {
        for (let i = 0; i < 100; i++, sent++) {
          const list = craft({ type: 'list', cookie: Buffer.alloc(0) }, freshSigner());
          sentBytes += list.length;
          await udp.send(list, '127.0.0.1', server.udpPort).catch(() => undefined);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const answeredBytes = udp.received.filter((r) => r.datagram.message.type !== 'announce').reduce((sum, r) => sum + r.bytes, 0);
      return { sent, sentBytes, answeredBytes };
    } finally {
      udp.close();
    }
  }

  async function joinFlood(): Promise<number> {
    const udp = await Udp.open('127.0.0.10');
    let sent = 0;
    try {
      while (!stopped() && sent < JOIN_FLOOD) {
        for (let i = 0; i < 50; i++, sent++) {
          await udp.send(craft({ type: 'join', group: 'Lobby', proof: Buffer.alloc(0) }, freshSigner()), '127.0.0.1', server.udpPort)
            .catch(() => undefined);
          await udp.send(randomBytes(1 + (sent % 1200)), '127.0.0.1', server.udpPort).catch(() => undefined);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return sent;
    } finally {
      udp.close();
    }
  }

  /** Restarts the server on the same state and port, as an operator's upgrade would. */
  async function restart(): Promise<void> {
    server = await restartServer(h, server);
    for (const member of honest) await server.daemon.waitForMsg('member online', { name: member.name }, 60_000);
  }

  it(`honest members get every file, verified; the server stays under ${RSS_BOUND / MiB} MiB`, async () => {
    timers.push(setTimeout(endSoak, SOAK_MS));
    for (const attacker of attackers) await joinAs(attacker.signer, 'Developers', server.udpPort);
    await joinAs(flooder.signer, 'Developers', server.udpPort);
    const sampler = setInterval(() => {
      void rssOf(server.daemon.proc.pid ?? 0).then((rss) => { peakRss = Math.max(peakRss, rss); }, () => undefined);
    }, 250);
    timers.push(sampler);
    const attacks = Promise.all([
      Promise.all(attackers.map((attacker) => persist(attacker, stall))),
      persist(flooder, pingFlood({ left: PING_FLOOD_BYTES })),
      listFlood(),
      joinFlood(),
    ]);

    const files = await h.dir('files');
    let rounds = 0;
    for (let round = 0; round < ROUNDS && !stopped(); round++, rounds++) {
      if (round === Math.floor(ROUNDS / 2)) await restart();
      const name = `round-${round}.bin`;
      const path = join(files, name);
      const digest = await writeRandomFile(path, FILE_SIZE);
      const run = await h.run(SERVER_BIN, ['distribute', 'Developers', path, '--state-dir', server.state, '--json'], 90_000);
      // The command ends: the honest members delivered, the attackers never (pending while they stall, failed
      // once their attempts are used up), so the exit code is 3 or 1, never a hang.
      expect([1, 3], run.stderr).toContain(run.code);
      const result = JSON.parse(run.stdout) as { deliveries: Array<{ member: string; state: string }> };
      const states = (ids: string[]): string[] => result.deliveries.filter((d) => ids.includes(d.member)).map((d) => d.state);
      expect(states(honestIds)).toEqual(honestIds.map(() => 'delivered'));
      expect(states([...attackers, flooder].map((a) => a.signer.id))).not.toContain('delivered');
      for (const member of honest) {
        const placed = join(member.downloads, 'Developers', name);
        await member.daemon.waitForMsg('received', { path: placed }, 60_000);
        expect(await sha256(placed)).toBe(digest);
      }
    }
    endSoak();
    const [[stallA, stallB], floods, lists, joins] = await attacks;
    clearInterval(sampler);

    // Every round ran, so the restart between them happened under the attacks too.
    expect(rounds).toBe(ROUNDS);
    // The attacks really ran: both stallers got offers more than once, the floods went out.
    expect(stallA).toBeGreaterThan(1);
    expect(stallB).toBeGreaterThan(1);
    expect(floods).toBeGreaterThan(0);
    expect(lists.sent).toBeGreaterThan(1_000);
    expect(joins).toBeGreaterThan(500);
    // No amplification: all the LIST flood got back is at most what it sent.
    expect(lists.answeredBytes).toBeLessThanOrEqual(lists.sentBytes);
    // The open group held its cap, and members.json stayed small.
    const status = await callDaemon<{ members: Array<{ joined: string[] }> }>(server.state, 'status', {});
    expect(status.members.filter((m) => m.joined.includes('Lobby')).length).toBeLessThanOrEqual(OPEN_CAP);
    expect((await stat(join(server.state, 'members.json'))).size).toBeLessThan(256 * 1024);
    expect(peakRss).toBeGreaterThan(0);
    expect(peakRss).toBeLessThan(RSS_BOUND);
    console.info(`soak: server peak RSS ${(peakRss / MiB).toFixed(0)} MiB; stallers connected ${stallA}+${stallB} times; `
      + `LIST ${lists.sent} sent (${lists.sentBytes} B), ${lists.answeredBytes} B answered; ${joins} fresh JOINs`);
  }, SOAK_MS + 240_000);
});
