// The member's receiving state machine, driven frame by frame through a fake link: no sockets, real
// files in a temporary directory. Reads like PROTOCOL.md §8.1 (member side).

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger, ErrorCode, isGroupcastError, Outcome, type Frame, type PeerId } from '@groupcast/shared';
import type { ReceivedEvent, UndeliveredEvent } from '../packages/client/src/receive/events.js';
import { Receiver, type ReceiveSession } from '../packages/client/src/receive/receiver.js';
import { PARTIAL_DIR } from '../packages/client/src/receive/download-area.js';
import { FakeLink } from './support/fake-link.js';

const SERVER = 'SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0' as PeerId;

type Offer = Extract<Frame, { type: 'offer' }>;

const sha = (data: Uint8Array): Buffer => createHash('sha256').update(data).digest();

let dir: string;
let downloads: string;
let receiver: Receiver;
let link: FakeLink;
let session: ReceiveSession;
let received: ReceivedEvent[];
let failed: UndeliveredEvent[];
let declined: UndeliveredEvent[];

async function startReceiver(checkpointBytes?: number): Promise<void> {
  receiver = new Receiver({
    log: createLogger({ name: 'test', level: 'silent' }),
    downloads,
    stateDir: join(dir, 'state'),
    wants: (group) => group === 'Developers',
    checkpointBytes,
  });
  await receiver.start();
  received = [];
  failed = [];
  declined = [];
  receiver.on('received', (event) => received.push(event));
  receiver.on('failed', (event) => failed.push(event));
  receiver.on('declined', (event) => declined.push(event));
  link = new FakeLink();
  session = receiver.openSession(link, SERVER);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-receiver-'));
  downloads = join(dir, 'dl');
  mkdirSync(join(dir, 'state'));
  await startReceiver();
});

afterEach(async () => {
  await receiver.close();
  await rm(dir, { recursive: true, force: true });
});

function offer(content: Buffer, overrides: Partial<Offer> = {}): Offer {
  return { type: 'offer', transfer: randomBytes(16), group: 'Developers', name: 'file.bin', size: content.length, sha256: sha(content), ...overrides };
}

/** Offers `content` and takes the member's ACCEPT, leaving the transfer open for DATA. */
async function accepted(content: Buffer, overrides: Partial<Offer> = {}): Promise<Offer> {
  const frame = offer(content, overrides);
  await session.handle(frame);
  await link.next();
  return frame;
}

async function sendData(transfer: Buffer, content: Buffer, from: number, chunk = 1000): Promise<void> {
  for (let offset = from; offset < content.length; offset += chunk) {
    await session.handle({ type: 'data', transfer, offset, payload: content.subarray(offset, offset + chunk) });
  }
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (err) {
    return isGroupcastError(err) ? err.code : String(err);
  }
  return undefined;
}

const partials = (): string[] => readdirSync(join(downloads, PARTIAL_DIR));

describe('receiving a file', () => {
  it('ACCEPT 0, DATA in order, then verified, placed, recorded, RESULT OK', async () => {
    const content = randomBytes(10_000);
    const frame = offer(content);
    await session.handle(frame);
    expect(await link.next()).toEqual({ type: 'accept', transfer: frame.transfer, offset: 0 });
    await sendData(frame.transfer, content, 0);
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK });
    const path = join(downloads, 'Developers', 'file.bin');
    expect(readFileSync(path)).toEqual(content);
    expect(received).toEqual([{ transfer: frame.transfer.toString('hex'), group: 'Developers', name: 'file.bin', path, sha256: sha(content).toString('hex'), size: content.length }]);
    expect(partials()).toEqual([]);
    const log = readFileSync(join(dir, 'state', 'received.jsonl'), 'utf8');
    expect(JSON.parse(log.trim())).toMatchObject({ transfer: frame.transfer.toString('hex'), path });
  });

  it('fsyncs at checkpoints without changing the result', async () => {
    await receiver.close();
    await startReceiver(3000);
    const content = randomBytes(10_000);
    const frame = await accepted(content);
    await sendData(frame.transfer, content, 0);
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK });
  });

  it('an empty file needs no DATA', async () => {
    const frame = offer(Buffer.alloc(0), { name: 'empty' });
    await session.handle(frame);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 0 });
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK });
    expect(readFileSync(join(downloads, 'Developers', 'empty'))).toHaveLength(0);
  });

  it('a transfer already received is answered ACCEPT(size) + OK without touching files', async () => {
    const content = randomBytes(500);
    const frame = await accepted(content);
    await sendData(frame.transfer, content, 0);
    await link.next();
    writeFileSync(join(downloads, 'Developers', 'file.bin'), 'changed by the user');
    await session.handle(frame);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 500 });
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK, message: 'already received' });
    expect(readFileSync(join(downloads, 'Developers', 'file.bin'), 'utf8')).toBe('changed by the user');
  });

  it('remembers received transfers across restarts', async () => {
    const content = randomBytes(500);
    const frame = await accepted(content);
    await sendData(frame.transfer, content, 0);
    await link.next();
    await receiver.close();
    await startReceiver();
    await session.handle(frame);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 500 });
    expect(await link.next()).toMatchObject({ type: 'result', message: 'already received' });
  });
});

describe('resume', () => {
  it('accepts from the partial length and the digest still covers the whole file', async () => {
    const content = randomBytes(10_000);
    const frame = offer(content);
    writeFileSync(join(downloads, PARTIAL_DIR, frame.transfer.toString('hex')), content.subarray(0, 4000));
    await session.handle(frame);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 4000 });
    await sendData(frame.transfer, content, 4000);
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK });
    expect(readFileSync(join(downloads, 'Developers', 'file.bin'))).toEqual(content);
  });

  it('a partial longer than the file starts over', async () => {
    const content = randomBytes(1000);
    const frame = offer(content);
    writeFileSync(join(downloads, PARTIAL_DIR, frame.transfer.toString('hex')), randomBytes(2000));
    await session.handle(frame);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 0 });
    await sendData(frame.transfer, content, 0);
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK });
  });

  it('a complete partial is verified at once, without DATA', async () => {
    const content = randomBytes(1000);
    const frame = offer(content);
    writeFileSync(join(downloads, PARTIAL_DIR, frame.transfer.toString('hex')), content);
    await session.handle(frame);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 1000 });
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK });
  });

  it('a closed connection keeps the partial for the next one', async () => {
    const content = randomBytes(5000);
    const frame = await accepted(content);
    await sendData(frame.transfer, content.subarray(0, 2000), 0);
    await session.close();
    await session.close();
    expect(partials()).toEqual([frame.transfer.toString('hex')]);
    link = new FakeLink();
    session = receiver.openSession(link, SERVER);
    await session.handle(frame);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 2000 });
  });
});

describe('refusals', () => {
  it('DECLINE NOT_MEMBER for a group not joined', async () => {
    await session.handle(offer(Buffer.from('x'), { group: 'Designers' }));
    expect(await link.next()).toMatchObject({ type: 'decline', outcome: Outcome.NOT_MEMBER });
    expect(declined).toHaveLength(1);
  });

  it.each(['../escape', '.groupcast-partial', 'a/b', 'c\u0000d', ''])('DECLINE BAD_NAME for %j', async (name) => {
    await session.handle(offer(Buffer.from('x'), { name }));
    expect(await link.next()).toMatchObject({ type: 'decline', outcome: Outcome.BAD_NAME });
    expect(readdirSync(downloads).filter((entry) => entry !== PARTIAL_DIR)).toEqual([]);
  });

  it('same name, same content: ACCEPT(size) + OK "already present"', async () => {
    const content = randomBytes(300);
    mkdirSync(join(downloads, 'Developers'));
    writeFileSync(join(downloads, 'Developers', 'file.bin'), content);
    await session.handle(offer(content));
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 300 });
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.OK, message: 'already present' });
  });

  it('same name, different content: DECLINE NAME_CLASH, never overwritten', async () => {
    mkdirSync(join(downloads, 'Developers'));
    writeFileSync(join(downloads, 'Developers', 'file.bin'), 'mine');
    await session.handle(offer(Buffer.from('theirs')));
    expect(await link.next()).toMatchObject({ type: 'decline', outcome: Outcome.NAME_CLASH });
    expect(readFileSync(join(downloads, 'Developers', 'file.bin'), 'utf8')).toBe('mine');
  });

  it('a directory at the name: NAME_CLASH', async () => {
    mkdirSync(join(downloads, 'Developers', 'file.bin'), { recursive: true });
    await session.handle(offer(Buffer.from('x')));
    expect(await link.next()).toMatchObject({ type: 'decline', outcome: Outcome.NAME_CLASH });
  });

  it('a file that appears while receiving: RESULT NAME_CLASH, it stays untouched', async () => {
    const content = randomBytes(2000);
    const frame = await accepted(content);
    mkdirSync(join(downloads, 'Developers'));
    writeFileSync(join(downloads, 'Developers', 'file.bin'), 'arrived meanwhile');
    await sendData(frame.transfer, content, 0);
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.NAME_CLASH });
    expect(readFileSync(join(downloads, 'Developers', 'file.bin'), 'utf8')).toBe('arrived meanwhile');
    expect(partials()).toEqual([]);
  });

  it('checksum mismatch: RESULT CHECKSUM, partial deleted, nothing placed', async () => {
    const content = randomBytes(2000);
    const frame = await accepted(content, { sha256: sha(Buffer.from('something else')) });
    await sendData(frame.transfer, content, 0);
    expect(await link.next()).toMatchObject({ type: 'result', outcome: Outcome.CHECKSUM });
    expect(existsSync(join(downloads, 'Developers', 'file.bin'))).toBe(false);
    expect(partials()).toEqual([]);
    expect(failed).toMatchObject([{ outcome: Outcome.CHECKSUM }]);
  });
});

describe('cancel', () => {
  it('deletes the partial and sends nothing', async () => {
    const content = randomBytes(5000);
    const frame = await accepted(content);
    await sendData(frame.transfer, content.subarray(0, 2000), 0);
    await session.handle({ type: 'cancel', transfer: frame.transfer, message: 'operator' });
    expect(partials()).toEqual([]);
    expect(link.sent).toEqual([]);
    expect(failed).toMatchObject([{ outcome: Outcome.CANCELLED, message: 'operator' }]);
    // The connection is free for the next transfer.
    const next = offer(Buffer.from('next'), { name: 'next.txt' });
    await session.handle(next);
    expect(await link.next()).toMatchObject({ type: 'accept', offset: 0 });
  });

  it('a CANCEL for a transfer not in flight is ignored', async () => {
    await session.handle({ type: 'cancel', transfer: randomBytes(16), message: '' });
    expect(link.sent).toEqual([]);
  });
});

describe('protocol violations close the connection (PROTOCOL)', () => {
  it('DATA at the wrong offset', async () => {
    const content = randomBytes(3000);
    const frame = await accepted(content);
    expect(await codeOf(session.handle({ type: 'data', transfer: frame.transfer, offset: 1, payload: content.subarray(1, 100) }))).toBe(ErrorCode.PROTOCOL);
  });

  it('DATA past the end', async () => {
    const content = randomBytes(100);
    const frame = await accepted(content);
    expect(await codeOf(session.handle({ type: 'data', transfer: frame.transfer, offset: 0, payload: randomBytes(101) }))).toBe(ErrorCode.PROTOCOL);
  });

  it('DATA with nothing accepted', async () => {
    expect(await codeOf(session.handle({ type: 'data', transfer: randomBytes(16), offset: 0, payload: Buffer.from('x') }))).toBe(ErrorCode.PROTOCOL);
  });

  it('OFFER while another transfer is in flight', async () => {
    await accepted(randomBytes(100));
    expect(await codeOf(session.handle(offer(randomBytes(10))))).toBe(ErrorCode.PROTOCOL);
  });

  it('a member-only frame from the server', async () => {
    expect(await codeOf(session.handle({ type: 'accept', transfer: randomBytes(16), offset: 0 }))).toBe(ErrorCode.PROTOCOL);
  });
});
