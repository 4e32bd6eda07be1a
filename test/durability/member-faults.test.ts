import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import {
  Cluster, finalPath, heldBytes, MiB, partialDir, waitForNew, waitUntil, writeRandomFile, type Member,
} from './cluster.js';

/**
 * A member dies (kill -9) or freezes (SIGSTOP) in the middle of a transfer. The server notices, keeps
 * the delivery pending and says why; when the member is back, the transfer resumes from its partial.
 * The server runs with --heartbeat-timeout 5s, so a frozen member is found in 5–7 s, not 15–20 s.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
const SIZE = 96 * MiB;
const HEARTBEAT_TIMEOUT_MS = 5_000;
let alice: Member;
let source: string;

beforeAll(async () => {
  [alice] = await c.startGroup(GROUP, ['alice'], ['--heartbeat-timeout', `${HEARTBEAT_TIMEOUT_MS}ms`]);
  source = await h.dir('source');
});

afterAll(() => h.cleanup());

async function expectVerified(name: string, sha256: string): Promise<void> {
  expect(await sha256File(finalPath(alice, GROUP, name))).toBe(sha256);
  expect(await readdir(partialDir(alice))).toEqual([]);
}

/** Distributes a new file of SIZE bytes to alice and resolves once she holds `held` bytes of it. */
async function midTransfer(name: string, held: number) {
  const file = join(source, name);
  const sha256 = await writeRandomFile(file, SIZE);
  const distributing = c.distribute(GROUP, [file]);
  const transfer = await c.transferOf(name);
  await waitUntil(async () => (await heldBytes(alice)) >= held, `alice holding ${held / MiB} MiB`);
  return { sha256, distributing, transfer };
}

describe('member faults', () => {
  it('kill -9 of a member mid-transfer: restarted, it resumes from its offset and verifies', async () => {
    const { sha256, distributing, transfer } = await midTransfer('killed.bin', 24 * MiB);

    const member = alice.daemon!;
    member.proc.kill('SIGKILL');
    await member.exited;
    const held = await heldBytes(alice);
    expect(held).toBeLessThan(SIZE);
    await c.server!.waitForMsg('delivery interrupted', { transfer, member: alice.id });
    // The operator's command ends: the only member is offline, its delivery pending (exit 3).
    const ran = await distributing;
    expect(ran.code, ran.stdout + ran.stderr).toBe(3);
    expect(ran.stdout).toMatch(/0 delivered, 1 pending, 0 failed/);

    c.startMember(alice);
    const resumed = await alice.daemon!.waitForMsg('resuming', { transfer }, 30_000);
    expect(Number(resumed.offset)).toBe(held);
    const line = await c.server!.waitForMsg('delivered', { transfer, member: alice.id }, 60_000);
    expect(Number(line.resumedAt)).toBe(held);
    expect(Number(line.bytesSent)).toBe(SIZE - held);
    await expectVerified('killed.bin', sha256);
  });

  it('a frozen member (SIGSTOP) is found dead by heartbeat, shown offline and pending; after SIGCONT it reconnects and resumes', async () => {
    const { sha256, distributing, transfer } = await midTransfer('frozen.bin', 16 * MiB);

    const member = alice.daemon!;
    const server = c.server!;
    const stopped = Date.now();
    member.proc.kill('SIGSTOP');
    try {
      // PING every third of the timeout, dead after the timeout of silence: noticed within 4/3 of it,
      // 5–7 s, and well before the default 15 s could have found it.
      await server.waitForMsg('member offline', { member: alice.id }, 25_000);
      expect(Date.now() - stopped).toBeLessThan(15_000);
      await server.waitForMsg('delivery interrupted', { transfer, member: alice.id });
      const delivery = (await c.deliveries()).find((d) => d.transfer === transfer);
      expect(delivery).toMatchObject({ member: alice.id, online: false, state: 'pending', waiting: 'member offline' });
      expect(delivery?.reason).toMatch(/interrupted/);
      const ran = await distributing;
      expect(ran.code).toBe(3);
    } finally {
      member.proc.kill('SIGCONT');
    }
    await waitForNew(server, 'member online', { member: alice.id }, 30_000);
    const line = await server.waitForMsg('delivered', { transfer, member: alice.id }, 60_000);
    expect(Number(line.resumedAt)).toBeGreaterThan(0);
    await expectVerified('frozen.bin', sha256);
  });
});
