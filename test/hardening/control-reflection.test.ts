import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_GROUP_ADDRESS, NakReason } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, testPort, type Daemon } from '../support/daemons.js';
import { craft, freshSigner, nonceOf, serverStatus, Udp, until, type Received } from '../security/tools.js';
import { JOIN_PER_SOURCE, LIST_PER_SOURCE } from '../../packages/server/src/control/control-plane.js';

/**
 * Issue 9, item 7: the control plane must not be a reflector. A real server on loopback with 40 groups
 * (ten GROUPS pages) is asked by hand-made datagrams from several loopback source addresses (each its
 * own rate-limit bucket).
 */
const h = harness();
const port = testPort();
const SERVER = '127.0.0.1';
const GROUPS = Array.from({ length: 40 }, (_, i) => ({
  name: `Group-${String(i).padStart(2, '0')}`,
  description: 'd'.repeat(150),
  open: i === 0,
}));
/** At most this many answers in `seconds` from one bucket (+2 for a token dripping in at either end). */
const allowance = (budget: { burst: number; refillMs: number }, seconds: number): number =>
  budget.burst + Math.ceil((seconds * 1000) / budget.refillMs) + 2;

let serverState: string;
let server: Daemon;
const sockets: Udp[] = [];

async function socket(address: string): Promise<Udp> {
  const udp = await Udp.open(address);
  sockets.push(udp);
  return udp;
}

interface Control { lists: number; cookies: number; naks: number; limited: number }

async function control(): Promise<Control> {
  const status = (await serverStatus(serverState)) as unknown as { server: { control: Partial<Control> } };
  const { lists = 0, cookies = 0, naks = 0, limited = 0 } = status.server.control;
  return { lists, cookies, naks, limited };
}

/** A cookie-less LIST to the group, and the COOKIE it gets back. */
async function cookieFor(udp: Udp): Promise<Received> {
  const list = craft({ type: 'list', cookie: Buffer.alloc(0) }, freshSigner());
  await udp.send(list, DEFAULT_GROUP_ADDRESS, port);
  const [answer] = await udp.wait((r) => r.datagram.message.type === 'cookie' && r.datagram.message.request.equals(nonceOf(list)));
  return answer!;
}

function pagesOf(udp: Udp, request: Buffer): Received[] {
  return udp.answersSoFar(request).filter((r) => r.datagram.message.type === 'groups');
}

describe('control plane: no reflection, no amplification', () => {
  beforeAll(async () => {
    serverState = await h.dir('server');
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: GROUPS }));
    server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', '--interface', SERVER, '--port', String(port)]);
    await server.waitForMsg('group-server started');
  });

  afterAll(async () => {
    for (const udp of sockets) udp.close();
    await h.cleanup();
  });

  it('a LIST from an unproven source gets one COOKIE no larger than itself; the groups only after the cookie comes back', async () => {
    const udp = await socket('127.0.0.11');
    const list = craft({ type: 'list', cookie: Buffer.alloc(0) }, freshSigner());
    await udp.send(list, DEFAULT_GROUP_ADDRESS, port);
    const [first] = await udp.wait((r) => r.datagram.message.type !== 'announce');
    expect(first!.datagram.message.type).toBe('cookie');
    expect(first!.bytes).toBeLessThanOrEqual(list.length);
    expect(first!.from.address).toBe(SERVER);

    const message = first!.datagram.message;
    if (message.type !== 'cookie') throw new Error('not a cookie');
    const again = craft({ type: 'list', cookie: message.cookie }, freshSigner());
    await udp.send(again, first!.from.address, first!.from.port);
    const [page] = await udp.wait((r) => r.datagram.message.type === 'groups' && r.datagram.message.request.equals(nonceOf(again)));
    const pages = page!.datagram.message.type === 'groups' ? page!.datagram.message.pages : 0;
    expect(pages).toBeGreaterThanOrEqual(5);
    const all = await udp.wait((r) => r.datagram.message.type === 'groups' && r.datagram.message.request.equals(nonceOf(again)), pages);
    expect(all.flatMap((r) => (r.datagram.message.type === 'groups' ? r.datagram.message.groups.map((g) => g.name) : [])).sort())
      .toEqual(GROUPS.map((g) => g.name));
    // Everything the first LIST got back is the one COOKIE, however many pages the groups take.
    expect(udp.answersSoFar(nonceOf(list)).map((r) => r.datagram.message.type)).toEqual(['cookie']);
  });

  it('a cookie proves only the source it was issued to', async () => {
    const owner = await socket('127.0.0.12');
    const thief = await socket('127.0.0.13');
    const issued = await cookieFor(owner);
    if (issued.datagram.message.type !== 'cookie') throw new Error('not a cookie');
    const stolen = craft({ type: 'list', cookie: issued.datagram.message.cookie }, freshSigner());
    await thief.send(stolen, issued.from.address, issued.from.port);
    const answer = await thief.answerTo(nonceOf(stolen));
    expect(answer.datagram.message.type).toBe('cookie');
    expect(pagesOf(thief, nonceOf(stolen))).toEqual([]);
  });

  it('LISTs are rate-limited per source address, and what is over the rate gets no answer', async () => {
    const udp = await socket('127.0.0.14');
    const issued = await cookieFor(udp);
    if (issued.datagram.message.type !== 'cookie') throw new Error('not a cookie');
    const before = await control();
    const started = Date.now();
    const requests: Buffer[] = [];
    for (let i = 0; i < 400; i++) {
      const list = craft({ type: 'list', cookie: issued.datagram.message.cookie }, freshSigner());
      requests.push(nonceOf(list));
      await udp.send(list, issued.from.address, issued.from.port);
    }
    await until(async () => ((await control()).limited > before.limited ? true : undefined), 'LISTs dropped over the rate');
    // Let the server finish the ones it took (it answers in order), then count.
    await until(async () => {
      const now = await control();
      return now.lists + now.limited - before.lists - before.limited >= requests.length ? true : undefined;
    }, 'every LIST handled', 20_000);
    const elapsedS = (Date.now() - started) / 1000;
    const answered = requests.filter((r) => pagesOf(udp, r).length > 0).length;
    expect(answered).toBeGreaterThan(0);
    expect(answered).toBeLessThanOrEqual(allowance(LIST_PER_SOURCE, elapsedS));
    expect(answered).toBeLessThan(requests.length);
  });

  it('JOINs from unknown ids are rate-limited per source address; ACK and NAK stay within a small factor of the request', async () => {
    const udp = await socket('127.0.0.15');
    const member = freshSigner();
    const join = craft({ type: 'join', group: GROUPS[0]!.name, proof: Buffer.alloc(0) }, member);
    await udp.send(join, SERVER, port);
    const [ack] = await udp.wait((r) => r.datagram.message.type === 'ack' && r.datagram.message.request.equals(nonceOf(join)));
    expect(ack!.bytes - join.length).toBe(19);

    const before = await control();
    const started = Date.now();
    const requests: Array<{ nonce: Buffer; bytes: number }> = [];
    for (let i = 0; i < 800; i++) {
      const refused = craft({ type: 'join', group: GROUPS[1]!.name, proof: Buffer.alloc(0) }, freshSigner());
      requests.push({ nonce: nonceOf(refused), bytes: refused.length });
      await udp.send(refused, SERVER, port);
    }
    await until(async () => {
      const now = await control();
      return now.naks + now.limited - before.naks - before.limited >= requests.length ? true : undefined;
    }, 'every JOIN handled', 20_000);
    const elapsedS = (Date.now() - started) / 1000;
    const answers = requests.flatMap((r) => udp.answersSoFar(r.nonce).map((a) => ({ ...a, requestBytes: r.bytes })));
    expect(answers.length).toBeGreaterThan(0);
    expect(answers.length).toBeLessThanOrEqual(allowance(JOIN_PER_SOURCE, elapsedS));
    expect(answers.length).toBeLessThan(requests.length);
    for (const answer of answers) {
      expect(answer.datagram.message).toMatchObject({ type: 'nak', reason: NakReason.NOT_AUTHORIZED });
      expect(answer.bytes / answer.requestBytes).toBeLessThan(1.5);
    }
    // The flood used up the address's allowance, but a member the server knows is never limited.
    const rejoin = craft({ type: 'join', group: GROUPS[0]!.name, proof: Buffer.alloc(0) }, member);
    await udp.send(rejoin, SERVER, port);
    const answer = await udp.answerTo(nonceOf(rejoin));
    expect(answer.datagram.message.type).toBe('ack');
  });

  it('listens on the configured interface only: unicast to another local address gets nothing', async () => {
    const udp = await socket('127.0.0.16');
    const elsewhere = craft({ type: 'list', cookie: Buffer.alloc(0) }, freshSigner());
    await udp.send(elsewhere, '127.0.0.2', port);
    // Two round trips to the right address after it, so an answer to the first would have arrived.
    for (let i = 0; i < 2; i++) {
      const here = craft({ type: 'list', cookie: Buffer.alloc(0) }, freshSigner());
      await udp.send(here, SERVER, port);
      await udp.answerTo(nonceOf(here));
    }
    expect(udp.answersSoFar(nonceOf(elsewhere))).toEqual([]);
  });

  it('group-client groups still lists every group with no address typed in, and through --server', async () => {
    for (const extra of [[], ['--server', `${SERVER}:${port}`]]) {
      const result = await h.run(CLIENT_BIN, ['groups', '--json', '--interface', SERVER, '--port', String(port), ...extra]);
      expect(result.code, result.stderr).toBe(0);
      const listing = JSON.parse(result.stdout) as { groups: Array<{ name: string }> };
      expect(listing.groups.map((g) => g.name).sort()).toEqual(GROUPS.map((g) => g.name));
    }
  });
});
