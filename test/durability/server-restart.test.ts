import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import {
  Cluster, finalPath, heldBytes, journal, MiB, partialDir, waitUntil, writeRandomFile, type Member,
} from './cluster.js';

/**
 * The server dies or is stopped in the middle of a distribution to three members, and starts again
 * on the same state directory. Its members keep their partials, notice the new instance, reconnect,
 * and the outbox offers again: each member ACCEPTs at the offset it holds.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let members: Member[];
let source: string;
/** The 200 MiB transfer, delivered by the first test and re-offered by the second. */
let big = '';

beforeAll(async () => {
  members = await Promise.all(['alice', 'bob', 'carol'].map((name) => c.member(name, [GROUP])));
  source = await h.dir('source');
  await c.startServer([{ name: GROUP, members }]);
  await c.startOnline(members);
});

afterAll(() => h.cleanup());

/** Every member holds at least `bytes` of the transfer in its partial, none has finished: the moment to strike. */
async function allHold(transfer: string, bytes: number, size: number): Promise<void> {
  await waitUntil(async () => {
    const held = await Promise.all(members.map((m) => heldBytes(m, transfer)));
    return held.every((b) => b >= bytes && b < size);
  }, `every member holding ${bytes} bytes of a ${size}-byte partial`);
}

async function expectVerified(name: string, sha256: string): Promise<void> {
  for (const m of members) {
    expect(await sha256File(finalPath(m, GROUP, name)), m.name).toBe(sha256);
    expect(await readdir(partialDir(m)), `${m.name} partials`).toEqual([]);
  }
}

describe('server crash and restart', () => {
  it('kill -9 while a 200 MiB file goes to 3 members: after a restart all 3 verify it, resending under half', async () => {
    const size = 200 * MiB;
    const file = join(source, 'big.bin');
    const sha256 = await writeRandomFile(file, size);
    const distributing = c.distribute(GROUP, [file]);
    const transfer = await c.transferOf('big.bin');
    big = transfer;

    await allHold(transfer, 0.55 * size, size);
    const crashed = c.server!;
    crashed.proc.kill('SIGKILL');
    await crashed.exited;

    const server = await c.restartServer();
    const delivered = await Promise.all(members.map((m) => server.waitForMsg('delivered', { transfer, member: m.id }, 90_000)));
    // distribute reconnected to the restarted daemon and watched the deliveries to their end.
    const result = await distributing;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/reconnected to the daemon/);
    let resent = 0;
    for (const line of delivered) {
      const resumedAt = Number(line.resumedAt);
      const bytesSent = Number(line.bytesSent);
      expect(resumedAt).toBeGreaterThanOrEqual(0.55 * size);
      expect(bytesSent).toBe(size - resumedAt);
      expect(bytesSent).toBeLessThan(size / 2);
      resent += bytesSent;
    }
    expect(resent).toBeLessThan((3 * size) / 2);
    for (const m of members) {
      const resumed = await m.daemon!.waitForMsg('resuming', { transfer });
      expect(Number(resumed.offset)).toBeGreaterThan(0);
    }
    await expectVerified('big.bin', sha256);
    const deliveries = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(deliveries.map((d) => d.state)).toEqual(['delivered', 'delivered', 'delivered']);
    // Counted from the status too: only what went out after the restart was sent again.
    expect(deliveries.reduce((sum, d) => sum + d.bytesSent, 0)).toBe(resent);
  });

  it('a transfer re-offered after a restart (its "delivered" line lost) moves no bytes and leaves the file untouched', async () => {
    const [alice] = members;
    const server = c.server!;
    expect(await server.stop('SIGTERM')).toBe(0);
    const id = big;
    // A power cut can lose the unsynced tail of the journal: drop alice's "delivered" record.
    const path = join(c.serverState, 'outbox.jsonl');
    const lines = (await readFile(path, 'utf8')).split('\n').filter(Boolean);
    const kept = lines.filter((line) => {
      const entry = JSON.parse(line) as { delivery?: { transfer: string; member: string; state: string } };
      return !(entry.delivery?.transfer === id && entry.delivery.member === alice!.id && entry.delivery.state === 'delivered');
    });
    expect(kept.length).toBeLessThan(lines.length);
    await writeFile(path, kept.map((line) => `${line}\n`).join(''));
    const placed = finalPath(alice!, GROUP, 'big.bin');
    const before = await stat(placed);

    const restarted = await c.restartServer();
    const line = await restarted.waitForMsg('delivered', { transfer: id, member: alice!.id }, 30_000);
    expect(line.bytesSent).toBe(0);
    await alice!.daemon!.waitForMsg('already received', { transfer: id });
    const after = await stat(placed);
    expect({ ino: after.ino, mtimeMs: after.mtimeMs, size: after.size }).toEqual({ ino: before.ino, mtimeMs: before.mtimeMs, size: before.size });
    expect(await readdir(partialDir(alice!))).toEqual([]);
    // Only alice was asked again; bob and carol's deliveries were on record.
    for (const m of members.slice(1)) {
      expect(restarted.logs.some((l) => l.msg === 'delivered' && l.member === m.id)).toBe(false);
    }
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} mid-transfer: exits 0 promptly with in-flight deliveries back to pending; a restart resumes them`, async () => {
      const size = 64 * MiB;
      const name = `${signal}.bin`;
      const file = join(source, name);
      const sha256 = await writeRandomFile(file, size);
      const distributing = c.distribute(GROUP, [file]);
      const transfer = await c.transferOf(name);
      await allHold(transfer, 16 * MiB, size);

      const server = c.server!;
      const signalled = Date.now();
      server.proc.kill(signal);
      expect(await server.exited).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(10_000);
      await server.waitForMsg('group-server stopped');

      // The journal on disk says every interrupted delivery is pending again: nothing is left "sending".
      const last = new Map<string, string>();
      for (const entry of await journal(c.serverState)) {
        if (entry.delivery?.transfer === transfer) last.set(entry.delivery.member, entry.delivery.state);
      }
      expect([...last.values()]).toEqual(['pending', 'pending', 'pending']);
      // No CANCEL reached the members: each kept its partial to resume from.
      for (const m of members) expect(await heldBytes(m, transfer)).toBeGreaterThanOrEqual(16 * MiB);

      const restarted = await c.restartServer();
      for (const m of members) {
        const line = await restarted.waitForMsg('delivered', { transfer, member: m.id }, 60_000);
        expect(Number(line.resumedAt)).toBeGreaterThanOrEqual(16 * MiB);
      }
      // distribute waited through the restart and ends with the deliveries.
      expect((await distributing).code).toBe(0);
      await expectVerified(name, sha256);
    });
  }
});
