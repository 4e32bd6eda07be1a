import { randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createLogger, encodeFrame, FrameReader, MAX_PARTIALS_PER_FRAME, MAX_PARTIALS_REPORTED, PROTOCOL_VERSION, RECLAIM_REQUEST,
  RECLAIM_TRANSFER, TLS_CIPHERS,
  type Frame, type PeerId,
} from '../../packages/shared/src/index.js';
import { PARTIAL_DIR } from '../../packages/client/src/receive/download-area.js';
import { Receiver } from '../../packages/client/src/receive/receiver.js';
import { harness } from '../support/daemons.js';
import { Cluster, waitUntil, writeRandomFile, type Member } from '../durability/cluster.js';
import { identityIn } from '../security/tools.js';

/**
 * The partials report (PROTOCOL.md 8.4): asked by the server right after HELLO, the member lists the
 * partials it holds, bounded; the server CANCELs exactly those it will not offer again, and refuses a
 * member that reports more than the budget.
 */
const h = harness();
const SERVER = 'SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0' as PeerId;
const hex = (): string => randomBytes(16).toString('hex');

afterAll(() => h.cleanup());

async function startReceiver(): Promise<Receiver> {
  const downloads = await h.dir('downloads');
  const receiver = new Receiver({
    log: createLogger({ name: 'test', level: 'silent' }), downloads, stateDir: await h.dir('state'), wants: () => true,
  });
  await receiver.start();
  return receiver;
}

describe('member: reporting and reclaiming partials', () => {
  it('answers the request with its id-named partials, ≤ 256 a frame and ≤ 1024 in all, then a PING; once per connection', async () => {
    const receiver = await startReceiver();
    const held = Array.from({ length: MAX_PARTIALS_REPORTED + 50 }, hex);
    await Promise.all(held.map((id) => writeFile(join(receiver.root, PARTIAL_DIR, id), '')));
    await writeFile(join(receiver.root, PARTIAL_DIR, 'notes.txt'), 'not a partial');
    const sent: Frame[] = [];
    const session = receiver.openSession({ send: (frame) => sent.push(frame) }, SERVER);

    await session.handle(RECLAIM_REQUEST);
    const reports = sent.filter((f) => f.type === 'partials');
    expect(reports.map((f) => f.transfers.length)).toEqual(Array(MAX_PARTIALS_REPORTED / MAX_PARTIALS_PER_FRAME).fill(MAX_PARTIALS_PER_FRAME));
    const reported = reports.flatMap((f) => f.transfers.map((t) => t.toString('hex')));
    expect(new Set(reported).size).toBe(MAX_PARTIALS_REPORTED);
    expect(reported.every((id) => held.includes(id))).toBe(true);
    expect(sent.at(-1)).toMatchObject({ type: 'ping' });
    expect(sent).toHaveLength(reports.length + 1);

    await session.handle(RECLAIM_REQUEST);
    expect(sent).toHaveLength(reports.length + 1);
    await session.close();
    await receiver.close();
  });

  it('sends nothing when it holds no partial', async () => {
    const receiver = await startReceiver();
    const sent: Frame[] = [];
    const session = receiver.openSession({ send: (frame) => sent.push(frame) }, SERVER);
    await session.handle(RECLAIM_REQUEST);
    expect(sent).toEqual([]);
    await session.close();
    await receiver.close();
  });

  it('deletes the partial of a transfer the server CANCELs while it is not in flight, and keeps the others', async () => {
    const receiver = await startReceiver();
    const [dead, live] = [hex(), hex()];
    for (const id of [dead, live]) await writeFile(join(receiver.root, PARTIAL_DIR, id), Buffer.alloc(1000));
    const sent: Frame[] = [];
    const session = receiver.openSession({ send: (frame) => sent.push(frame) }, SERVER);
    await session.handle({ type: 'cancel', transfer: Buffer.from(dead, 'hex'), message: 'will not be offered again' });
    await session.handle({ type: 'cancel', transfer: Buffer.from(hex(), 'hex'), message: 'held nowhere' });
    expect(await readdir(join(receiver.root, PARTIAL_DIR))).toEqual([live]);
    expect(sent).toEqual([]);
    await session.close();
    await receiver.close();
  });
});

/** A member's data connection by hand: TLS with the member's key, HELLO, and every frame the server sends. */
class RawMember {
  readonly frames: Frame[] = [];
  closed = false;
  private constructor(private readonly socket: TLSSocket) {
    socket.pipe(new FrameReader((frame) => void this.frames.push(frame)));
    socket.on('error', () => undefined);
    socket.once('close', () => (this.closed = true));
  }

  static async connect(port: number, member: Member): Promise<RawMember> {
    const identity = await identityIn(member.state, member.name);
    const socket = connect({
      host: '127.0.0.1', port, cert: identity.certPem, key: identity.keyPem, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS,
      rejectUnauthorized: false, checkServerIdentity: () => undefined,
    });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    socket.write(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: member.name }));
    return new RawMember(socket);
  }

  send(frame: Frame): void {
    this.socket.write(encodeFrame(frame));
  }

  async frame(match: (frame: Frame) => boolean, what: string): Promise<Frame> {
    await waitUntil(() => this.frames.some(match), what, 20_000);
    return this.frames.find(match)!;
  }

  close(): void {
    this.socket.destroy();
  }
}

describe('server: answering the report', () => {
  const c = new Cluster(h);
  let alice: Member;
  let tcpPort = 0;
  let live = '';

  beforeAll(async () => {
    alice = await c.member('alice', ['Developers']);
    tcpPort = Number((await c.startServer([{ name: 'Developers', members: [alice] }])).logs.find((l) => l.msg === 'group-server started')?.tcpPort);
    // Alice joins as a real member, then goes away: a file distributed now waits for her (a live delivery).
    await c.startOnline([alice]);
    await alice.daemon!.stop('SIGTERM');
    await c.server!.waitForMsg('member offline', { member: alice.id });
    const file = join(await h.dir('source'), 'waiting.bin');
    await writeRandomFile(file, 1024);
    const queued = await c.distribute('Developers', [file], ['--timeout', '1s']);
    expect(queued.code, queued.stdout + queued.stderr).toBe(3);
    live = await c.transferOf('waiting.bin');
  });

  it('asks right after HELLO, before any OFFER, and CANCELs exactly the reported transfers it will not offer again', async () => {
    const raw = await RawMember.connect(tcpPort, alice);
    try {
      await raw.frame((f) => f.type === 'offer', 'the OFFER of the waiting file');
      const kinds = raw.frames.map((f) => (f.type === 'cancel' && f.transfer.equals(RECLAIM_TRANSFER) ? 'reclaim' : f.type));
      expect(kinds.slice(0, 3)).toEqual(['hello', 'reclaim', 'offer']);

      const [dead, unknown] = [hex(), hex()];
      raw.send({ type: 'partials', transfers: [live, dead, unknown].map((id) => Buffer.from(id, 'hex')) });
      raw.send({ type: 'ping', time: 4242 });
      await raw.frame((f) => f.type === 'pong' && f.time === 4242, 'the PONG after the report');
      const cancelled = raw.frames.filter((f) => f.type === 'cancel' && !f.transfer.equals(RECLAIM_TRANSFER));
      expect(cancelled.map((f) => f.type === 'cancel' && f.transfer.toString('hex')).sort()).toEqual([dead, unknown].sort());
      expect(raw.closed).toBe(false);
    } finally {
      raw.close();
    }
  });

  it('closes the connection of a member that reports more than 1024 partials', async () => {
    const raw = await RawMember.connect(tcpPort, alice);
    try {
      await raw.frame((f) => f.type === 'offer', 'the OFFER of the waiting file');
      for (let sent = 0; sent <= MAX_PARTIALS_REPORTED; sent += MAX_PARTIALS_PER_FRAME) {
        raw.send({ type: 'partials', transfers: Array.from({ length: MAX_PARTIALS_PER_FRAME }, () => randomBytes(16)) });
      }
      await waitUntil(() => raw.closed, 'the server closing the connection', 20_000);
      await c.server!.waitForLog((l) => l.msg === 'member connection closed' && /more than 1024 partials/.test(JSON.stringify(l.err)));
      const cancels = raw.frames.filter((f) => f.type === 'cancel' && !f.transfer.equals(RECLAIM_TRANSFER));
      expect(cancels.length).toBeLessThanOrEqual(MAX_PARTIALS_REPORTED);
    } finally {
      raw.close();
    }
  });
});
