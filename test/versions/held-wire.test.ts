import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ALPN_PIECES, Capability, createLogger, ErrorCode, Outcome, PieceHasher, PROTOCOL_VERSION, shortId, TRANSFER_ID_LENGTH,
  type Frame, type Identity, type PeerId,
} from '../../packages/shared/src/index.js';
import { Receiver, type ReceiveSession } from '../../packages/client/src/receive/receiver.js';
import { harness, SERVER_BIN } from '../support/daemons.js';
import { identityIn, joinAs } from '../security/tools.js';
import { HostileLink, startServer, type Server } from '../hardening/session-tools.js';

/**
 * The held-pieces rule on the wire (PROTOCOL.md §7.5): the server says HELD_PIECES in its HELLO, takes a
 * BITFIELD before ACCEPT and streams only the pieces not set; a member sends that BITFIELD only to a
 * server that said so. The server side against a real group-server and a hand-driven member; the
 * member side against the receiver driven frame by frame.
 */
const h = harness();
const PIECE = 256 * 1024;
const SIZE = 4 * PIECE;

afterAll(() => h.cleanup());

describe('the server, to a member that holds pieces', () => {
  let server: Server;
  const ids: Record<'patcher' | 'liar', Identity> = {} as never;
  const links: HostileLink[] = [];

  beforeAll(async () => {
    ids.patcher = await identityIn(await h.dir('patcher'), 'patcher');
    ids.liar = await identityIn(await h.dir('liar'), 'liar');
    server = await startServer(h, [
      { name: 'Patch', members: [ids.patcher.signer.id] },
      { name: 'Liars', members: [ids.liar.signer.id] },
    ]);
  });

  afterAll(() => {
    for (const link of links) link.destroy();
  });

  /** A gcdp/1.1 member that says pieces (no peers), once the server has it online. */
  async function connect(name: keyof typeof ids, group: string): Promise<HostileLink> {
    await joinAs(ids[name].signer, group, server.udpPort);
    const link = await HostileLink.open(server.tcpPort, ids[name], undefined, ALPN_PIECES);
    links.push(link);
    link.send({ type: 'hello', version: PROTOCOL_VERSION, name, caps: { flags: Capability.PIECES, peerPort: 0 } });
    await server.daemon.waitForMsg('member online', { member: ids[name].signer.id });
    return link;
  }

  async function distribute(group: string): Promise<void> {
    const file = join(await h.dir('files'), `${group}.bin`);
    await writeFile(file, randomBytes(SIZE));
    void h.run(SERVER_BIN, ['distribute', group, file, '--state-dir', server.state, '--json'], 60_000).catch(() => undefined);
  }

  it('says HELD_PIECES, ignores a BITFIELD about another transfer, and sends only the pieces not held', async () => {
    const link = await connect('patcher', 'Patch');
    const hello = await link.frame('hello');
    expect((hello.caps?.flags ?? 0) & Capability.HELD_PIECES).toBe(Capability.HELD_PIECES);
    await distribute('Patch');
    const offer = await link.frame('offer');
    expect((await link.frame('manifest')).manifest.pieceSize).toBe(PIECE);
    link.send({ type: 'bitfield', transfer: randomBytes(TRANSFER_ID_LENGTH), bits: Buffer.from([0xf0]) });
    // Pieces 0 and 2 held; ACCEPT's offset is the held prefix (piece 0).
    link.send({ type: 'bitfield', transfer: offer.transfer, bits: Buffer.from([0xa0]) });
    link.send({ type: 'accept', transfer: offer.transfer, offset: PIECE });
    const data = (): Array<Extract<Frame, { type: 'data' }>> => link.frames.filter((f): f is Extract<Frame, { type: 'data' }> => f.type === 'data');
    await link.until(() => data().reduce((sum, f) => sum + f.payload.length, 0) >= 2 * PIECE, 'the two missing pieces');
    link.send({ type: 'result', transfer: offer.transfer, outcome: Outcome.OK, message: '' });
    const delivered = await server.daemon.waitForMsg('delivered', { transfer: offer.transfer.toString('hex') });
    expect(data().map((f) => [f.offset, f.payload.length])).toEqual([[PIECE, PIECE], [3 * PIECE, PIECE]]);
    expect(Number(delivered.bytesSent)).toBe(2 * PIECE);
    expect(link.closed).toBe(false);
  });

  it('a BITFIELD before ACCEPT of the wrong length closes the connection as a protocol violation', async () => {
    const link = await connect('liar', 'Liars');
    await distribute('Liars');
    const offer = await link.frame('offer');
    link.send({ type: 'bitfield', transfer: offer.transfer, bits: Buffer.from([0xf0, 0x00]) });
    link.send({ type: 'accept', transfer: offer.transfer, offset: 0 });
    const closed = await server.daemon.waitForLog(
      (l) => l.msg === 'member connection closed' && l.member === shortId(ids.liar.signer.id)
        && (l.err as { code?: string } | undefined)?.code === ErrorCode.PROTOCOL,
      20_000, 'the liar closed for a protocol violation',
    );
    expect(String((closed.err as { message: string }).message)).toContain('BITFIELD before ACCEPT');
    await link.whenClosed();
  });
});

describe('the member, replacing a version', () => {
  const SERVER = 'SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0' as PeerId;
  let receiver: Receiver;
  let root: string;

  /** A fake link: what the member sends, in order. */
  function fakeLink() {
    const sent: Frame[] = [];
    return { sent, send: (frame: Frame) => void sent.push(frame) };
  }

  function manifestOf(transfer: Buffer, data: Buffer): Frame {
    const hasher = new PieceHasher(PIECE);
    hasher.update(data);
    const sha256 = createHash('sha256').update(data).digest();
    return { type: 'manifest', transfer, manifest: { pieceSize: PIECE, entries: [{ path: 'v.bin', size: data.length, mode: 0o644, sha256, pieces: hasher.digest() }] } };
  }

  function offerOf(transfer: Buffer, data: Buffer): Frame {
    return { type: 'offer', transfer, group: 'Developers', name: 'v.bin', size: data.length, sha256: createHash('sha256').update(data).digest() };
  }

  async function until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Offers `data` on `session`; returns the frames the member answered the OFFER with (up to its ACCEPT). */
  async function offer(session: ReceiveSession, link: ReturnType<typeof fakeLink>, transfer: Buffer, data: Buffer): Promise<Frame[]> {
    link.sent.length = 0;
    await session.handle(manifestOf(transfer, data));
    await session.handle(offerOf(transfer, data));
    await until(() => link.sent.some((f) => f.type === 'accept' || f.type === 'decline'), 'an answer to the offer');
    return [...link.sent];
  }

  async function sendData(session: ReceiveSession, transfer: Buffer, data: Buffer, from: number, to: number): Promise<void> {
    for (let at = from; at < to; at += PIECE) await session.handle({ type: 'data', transfer, offset: at, payload: data.subarray(at, Math.min(to, at + PIECE)) });
  }

  const v1 = randomBytes(SIZE);
  const v2 = Buffer.concat([v1.subarray(0, 2 * PIECE), randomBytes(PIECE), v1.subarray(3 * PIECE)]);
  const v3 = Buffer.concat([v2.subarray(0, PIECE), randomBytes(PIECE), v2.subarray(2 * PIECE)]);

  beforeAll(async () => {
    const dir = await h.dir('member');
    root = join(dir, 'dl');
    mkdirSync(join(dir, 'state'));
    receiver = new Receiver({ log: createLogger({ name: 'test', level: 'silent' }), downloads: root, stateDir: join(dir, 'state'), wants: () => true });
    await receiver.start();
    const link = fakeLink();
    const session = receiver.openSession(link, SERVER, { pieces: true, heldPieces: true });
    const t1 = randomBytes(TRANSFER_ID_LENGTH);
    expect(await offer(session, link, t1, v1)).toEqual([{ type: 'accept', transfer: t1, offset: 0 }]);
    await sendData(session, t1, v1, 0, SIZE);
    await until(() => link.sent.some((f) => f.type === 'result'), 'RESULT for version 1');
    await session.close();
  });

  afterAll(() => receiver.close());

  it('to a server that did not say HELD_PIECES: no BITFIELD, ACCEPT at the held prefix, the rest streamed', async () => {
    const link = fakeLink();
    const session = receiver.openSession(link, SERVER, { pieces: true, heldPieces: false });
    const t2 = randomBytes(TRANSFER_ID_LENGTH);
    expect(await offer(session, link, t2, v2)).toEqual([{ type: 'accept', transfer: t2, offset: 2 * PIECE }]);
    await sendData(session, t2, v2, 2 * PIECE, SIZE);
    await until(() => link.sent.some((f) => f.type === 'result'), 'RESULT for version 2');
    expect(link.sent.at(-1)).toMatchObject({ type: 'result', outcome: Outcome.OK });
    expect(readFileSync(join(root, 'Developers', 'v.bin')).equals(v2)).toBe(true);
    await session.close();
  });

  it('to a server that said it: BITFIELD then ACCEPT; DATA for a held piece is a violation; the missing piece alone completes it', async () => {
    const t3 = randomBytes(TRANSFER_ID_LENGTH);
    const link = fakeLink();
    const session = receiver.openSession(link, SERVER, { pieces: true, heldPieces: true });
    expect(await offer(session, link, t3, v3)).toEqual([
      { type: 'bitfield', transfer: t3, bits: Buffer.from([0xb0]) },
      { type: 'accept', transfer: t3, offset: PIECE },
    ]);
    await expect(session.handle({ type: 'data', transfer: t3, offset: 2 * PIECE, payload: v3.subarray(2 * PIECE, 3 * PIECE) }))
      .rejects.toMatchObject({ code: ErrorCode.PROTOCOL });
    await session.close();

    const again = fakeLink();
    const next = receiver.openSession(again, SERVER, { pieces: true, heldPieces: true });
    await offer(next, again, t3, v3);
    await sendData(next, t3, v3, PIECE, 2 * PIECE);
    await until(() => again.sent.some((f) => f.type === 'result'), 'RESULT for version 3');
    expect(again.sent.at(-1)).toMatchObject({ type: 'result', outcome: Outcome.OK });
    expect(readFileSync(join(root, 'Developers', 'v.bin')).equals(v3)).toBe(true);
    await next.close();
  });
});
