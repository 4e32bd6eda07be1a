// Durable state without processes: the server's outbox journal across crashes (torn lines, in-flight
// deliveries), its compaction, the retention sweep that bounds it; a member's stale partials.

import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger, type PeerId } from '@groupcast/shared';
import { Distributor, EXPIRED_REASON, HISTORY_LIMIT, sweepInterval } from '../../packages/server/src/delivery/distributor.js';
import { Membership } from '../../packages/server/src/control/membership.js';
import { Outbox, type TransferRecord } from '../../packages/server/src/delivery/outbox.js';
import { ContentStore } from '../../packages/server/src/delivery/store.js';
import { PARTIAL_DIR, PARTIAL_MAX_AGE_MS, reclaimStalePartials } from '../../packages/client/src/receive/download-area.js';

const log = createLogger({ name: 'test', level: 'silent' });
const ALICE = 'ALICE' as PeerId;
const BOB = 'BOB' as PeerId;
const HOUR = 3_600_000;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-outbox-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

let serial = 0;
function transfer(fields: Partial<TransferRecord> = {}): TransferRecord {
  serial++;
  return {
    id: serial.toString(16).padStart(32, '0'),
    group: 'Developers',
    name: `f${serial}.bin`,
    size: 10,
    sha256: serial.toString(16).padStart(64, 'a'),
    createdAt: 0,
    expiresAt: Date.now() + HOUR,
    ...fields,
  };
}

async function reopen(): Promise<Outbox> {
  const outbox = new Outbox({ stateDir: dir, log });
  await outbox.load();
  return outbox;
}

async function journalLines(): Promise<string[]> {
  return (await readFile(join(dir, 'outbox.jsonl'), 'utf8')).split('\n').filter(Boolean);
}

describe('outbox journal', () => {
  it('after a crash: a torn last line and foreign lines are skipped, "sending" is pending again and not charged', async () => {
    const first = await reopen();
    const t = transfer();
    const [toAlice, toBob] = await first.create(t, [ALICE, BOB]);
    first.update(toAlice!, { state: 'sending', attempts: 1 });
    first.update(toBob!, { state: 'delivered' });
    await first.close();
    await appendFile(join(dir, 'outbox.jsonl'), '{"kind":"other"}\n{"kind":"delivery","delivery":{"transfer":"');

    const second = await reopen();
    expect(second.deliveriesOf(t.id).map((d) => [d.member, d.state, d.attempts, d.reason])).toEqual([
      [ALICE, 'pending', 0, 'interrupted: server restarted'],
      [BOB, 'delivered', 0, ''],
    ]);
    // Loading rewrote the journal as a clean snapshot: every line parses, the torn one is gone.
    const lines = await journalLines();
    expect(lines.map((line) => (JSON.parse(line) as { kind: string }).kind)).toEqual(['transfer', 'delivery', 'delivery']);
    await second.close();
  });

  it('compacts itself: thousands of updates leave a journal of about a thousand lines, and the last state', async () => {
    const outbox = await reopen();
    const t = transfer();
    const [delivery] = await outbox.create(t, [ALICE]);
    for (let attempt = 1; attempt <= 3_000; attempt++) outbox.update(delivery!, { attempts: attempt });
    await outbox.close();
    expect((await journalLines()).length).toBeLessThanOrEqual(1_002);
    const again = await reopen();
    expect(again.deliveriesOf(t.id)[0]?.attempts).toBe(3_000);
    await again.close();
  });

  it('a forgotten transfer stays forgotten across a restart', async () => {
    const outbox = await reopen();
    const kept = transfer();
    const gone = transfer();
    await outbox.create(kept, [ALICE]);
    await outbox.create(gone, [ALICE, BOB]);
    outbox.forget(gone.id);
    expect(outbox.deliveriesFor(BOB)).toEqual([]);
    await outbox.close();
    const again = await reopen();
    expect(again.listTransfers().map((t) => t.id)).toEqual([kept.id]);
    expect(again.deliveriesFor(ALICE).map((d) => d.transfer)).toEqual([kept.id]);
    await again.close();
  });
});

describe('retention sweep', () => {
  it('scales its interval with the keep time, within bounds', () => {
    expect(sweepInterval(2_000)).toBe(500);
    expect(sweepInterval(100)).toBe(250);
    expect(sweepInterval(7 * 24 * HOUR)).toBe(60_000);
  });

  it('expires what is still pending, keeps a bounded history, and leaves only needed files in the store', async () => {
    const outbox = await reopen();
    const store = new ContentStore(dir);
    await store.open();
    const membership = new Membership({ log, groups: [{ name: 'Developers', description: '', open: true, members: [] }], stateDir: dir });
    const now = Date.now();

    const live = transfer();
    const late = transfer({ expiresAt: now - 1 });
    await outbox.create(live, [ALICE]);
    await outbox.create(late, [ALICE, BOB]);
    outbox.update(outbox.deliveriesOf(late.id)[0]!, { state: 'delivered' });
    const history: TransferRecord[] = [];
    for (let i = 0; i < HISTORY_LIMIT + 4; i++) {
      const old = transfer({ expiresAt: now - HOUR - i });
      history.push(old);
      const [delivery] = await outbox.create(old, [ALICE]);
      outbox.update(delivery!, { state: 'delivered' });
    }
    for (const t of [live, late, ...history]) await writeFile(store.path(t.sha256), 'x');
    await writeFile(store.path('f'.repeat(64)), 'never recorded');
    await writeFile(join(store.dir, '.ingest-123-crashed'), 'half a copy');

    const distributor = new Distributor({
      log, outbox, store, membership, session: () => undefined, concurrency: 1, keepMs: HOUR,
    });
    await distributor.start();
    await distributor.close();

    const bob = outbox.deliveriesOf(late.id).find((d) => d.member === BOB);
    expect(bob).toMatchObject({ state: 'failed', reason: EXPIRED_REASON });
    expect(outbox.deliveriesOf(live.id)[0]?.state).toBe('pending');
    // The newest finished transfers are kept for status; the five oldest are forgotten.
    const remaining = new Set(outbox.listTransfers().map((t) => t.id));
    expect(remaining.size).toBe(1 + HISTORY_LIMIT);
    expect(remaining.has(late.id)).toBe(true);
    expect(history.slice(-5).some((t) => remaining.has(t.id))).toBe(false);
    expect(await readdir(store.dir)).toEqual([live.sha256]);
    await outbox.close();
  });
});

describe("a member's partials", () => {
  it('are kept while a transfer may resume, and reclaimed once far past any retention', async () => {
    const partials = join(dir, PARTIAL_DIR);
    await mkdir(partials);
    const fresh = 'a'.repeat(32);
    const stale = 'b'.repeat(32);
    await writeFile(join(partials, fresh), 'recent bytes');
    await writeFile(join(partials, stale), 'bytes of a transfer long expired');
    const now = Date.now();
    const old = new Date(now - PARTIAL_MAX_AGE_MS - 1_000);
    await utimes(join(partials, stale), old, old);
    expect(await reclaimStalePartials(dir, now)).toEqual([stale]);
    expect(await readdir(partials)).toEqual([fresh]);
  });
});
