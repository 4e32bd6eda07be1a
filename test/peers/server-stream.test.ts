import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  encodeFrame, FrameReader, loadOrCreateIdentity, MIN_PIECE_SIZE, PROTOCOL_VERSION, TLS_CIPHERS, type Frame,
} from '../../packages/shared/src/index.js';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { joinAs } from '../security/tools.js';
import { Cluster, finalPath, MiB, partialDir, waitUntil, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Pieces on the server's own stream (PROTOCOL.md §7.4), real daemons on loopback: a member checks each
 * piece as it arrives, stops at the first bad one, keeps the good pieces before it and resumes from
 * there; a member that speaks only version 1 is served exactly as before.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let source: string;

beforeAll(async () => {
  // Alice joins once, then goes offline: the store copy can be damaged before anything is sent.
  [alice] = await c.startGroup(GROUP, ['alice']);
  source = await h.dir('source');
  await alice.daemon!.stop();
});

afterAll(() => h.cleanup());

async function flipByte(path: string, at: number): Promise<void> {
  const file = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0xff;
    await file.write(byte, 0, 1, at);
  } finally {
    await file.close();
  }
}

describe('pieces on the server stream', () => {
  it('a corrupted piece is caught when it completes; the pieces before it are kept and the retry resumes there', async () => {
    const file = join(source, 'pieces.bin');
    const sha256 = await writeRandomFile(file, 3 * MiB);
    const ran = await c.distribute(GROUP, [file]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(3);
    const stored = join(c.serverState, 'store', sha256);
    const BAD_PIECE = 5;
    await flipByte(stored, BAD_PIECE * MIN_PIECE_SIZE + 3);

    const member = c.startMember(alice);
    await member.waitForMsg('transfer failed', { reason: `piece ${BAD_PIECE} does not match its sha256 in the manifest` }, 30_000);
    const partial = join(partialDir(alice), (await c.deliveries())[0]!.transfer);
    await waitUntil(async () => (await stat(partial).then((s) => s.size, () => -1)) === BAD_PIECE * MIN_PIECE_SIZE, 'partial cut to the good pieces');

    // The operator's disk is repaired: the next attempt resumes after the good pieces and verifies.
    await flipByte(stored, BAD_PIECE * MIN_PIECE_SIZE + 3);
    const delivered = await c.server!.waitForMsg('delivered', { member: alice.id }, 60_000);
    expect(delivered.resumedAt).toBe(BAD_PIECE * MIN_PIECE_SIZE);
    expect(await sha256File(finalPath(alice, GROUP, 'pieces.bin'))).toBe(sha256);
  });

  it('a member that offers no ALPN gets a version-1 HELLO and an OFFER without a MANIFEST', async () => {
    const identity = await loadOrCreateIdentity(await h.dir('old-member'), 'old');
    // Allow the old member in the group, as an operator would, and let the server load it.
    const config = JSON.parse(await readFile(c.config, 'utf8')) as { groups: Array<{ name: string; members: string[] }> };
    config.groups[0]!.members.push(identity.signer.id);
    await writeFile(c.config, JSON.stringify(config));
    await c.server!.stop();
    await c.restartServer();
    const port = Number((await c.server!.waitForMsg('group-server started')).tcpPort ?? 0);
    await joinAs(identity.signer, GROUP, Number(c.port));
    const frames: Frame[] = [];
    const socket = connect({
      host: '127.0.0.1', port, cert: identity.certPem, key: identity.keyPem, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS,
      rejectUnauthorized: false, checkServerIdentity: () => undefined,
    });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', resolve);
        socket.once('error', reject);
      });
      expect(socket.alpnProtocol).toBe(false);
      socket.pipe(new FrameReader((frame) => void frames.push(frame)));
      socket.write(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: 'old' }));
      const file = join(source, 'plain.bin');
      await writeRandomFile(file, 1000);
      void c.distribute(GROUP, [file]);
      await waitUntil(() => frames.some((f) => f.type === 'offer'), 'an offer to the old member', 30_000);
      expect(frames[0]).toEqual({ type: 'hello', version: PROTOCOL_VERSION, name: expect.any(String) });
      expect(frames.map((f) => f.type)).not.toContain('manifest');
    } finally {
      socket.destroy();
    }
  });
});
