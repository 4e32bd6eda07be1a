// A pulled file is placed while the server still sends a piece the member asked it for by index (a peer
// brought it first): that DATA is dropped, as for a stream that ended early on the member's side, not a
// protocol violation that closes the member's data connection. Driven frame by frame through a fake
// link, with a real peer node and no peers listed, so every piece comes from the "server".

import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ANY_PIECE, createLogger, Outcome, type Frame, type PeerId } from '../../packages/shared/src/index.js';
import { PeerNode } from '../../packages/client/src/peer/peer-node.js';
import { Receiver } from '../../packages/client/src/receive/receiver.js';
import { identityIn } from '../security/tools.js';
import { FakeLink } from '../support/fake-link.js';

const SERVER = 'SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0-SERVER0' as PeerId;
const PIECE = 262_144;
const WAIT_MS = 10_000;
const sha = (data: Uint8Array): Buffer => createHash('sha256').update(data).digest();
const cleanups: Array<() => Promise<void>> = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe('a pulled file placed before a piece asked of the server arrives', () => {
  it('drops that DATA, and the connection goes on to the next transfer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gc-late-data-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'state'));
    const log = createLogger({ name: 'test', level: 'silent' });
    const node = new PeerNode({ log, identity: await identityIn(dir, 'member'), name: 'member', port: 0, host: '127.0.0.1' });
    await node.start();
    cleanups.push(() => node.close());
    const receiver = new Receiver({ peers: node, log, downloads: join(dir, 'dl'), stateDir: join(dir, 'state'), wants: () => true });
    await receiver.start();
    cleanups.push(() => receiver.close());
    const link = new FakeLink(WAIT_MS);
    const session = receiver.openSession(link, SERVER, { pieces: true });

    const content = randomBytes(2 * PIECE);
    const pieces = [content.subarray(0, PIECE), content.subarray(PIECE)];
    const transfer = randomBytes(16);
    const manifest = { pieceSize: PIECE, entries: [{ path: 'late.bin', size: content.length, mode: 0o644, sha256: sha(content), pieces: Buffer.concat(pieces.map(sha)) }] };
    await session.handle({ type: 'manifest', transfer, manifest });
    await session.handle({ type: 'peers', transfer, peers: [] });
    await session.handle({ type: 'offer', transfer, group: 'Developers', name: 'late.bin', size: content.length, sha256: sha(content) });

    // Every piece asked for ("any" or by index) is served, in order, until the member answers RESULT.
    let next = 0;
    let result: Frame | undefined;
    while (!result) {
      const frame = await link.next();
      if (frame.type === 'result') result = frame;
      if (frame.type !== 'request') continue;
      const piece = frame.piece === ANY_PIECE ? next : frame.piece;
      if (piece >= pieces.length) {
        await session.handle({ type: 'seeded', transfer });
        continue;
      }
      next = Math.max(next, piece + 1);
      await session.handle({ type: 'data', transfer, offset: piece * PIECE, payload: pieces[piece]! });
    }
    expect(result).toMatchObject({ type: 'result', outcome: Outcome.OK });
    expect(readFileSync(join(dir, 'dl', 'Developers', 'late.bin')).equals(content)).toBe(true);

    // The server's copy of a piece that came from elsewhere, after the file was placed: dropped.
    await expect(session.handle({ type: 'data', transfer, offset: PIECE, payload: pieces[1]! })).resolves.toBeUndefined();
    // And the connection takes the next transfer.
    const small = randomBytes(1000);
    const again = randomBytes(16);
    await session.handle({ type: 'offer', transfer: again, group: 'Developers', name: 'next.bin', size: small.length, sha256: sha(small) });
    expect(await link.next()).toMatchObject({ type: 'accept', transfer: again, offset: 0 });
  });
});
