import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, heldBytes, MiB, waitUntil, writeRandomFile, type Member } from './cluster.js';

/**
 * `distribute` watches a delivery held back by its own --rate while the server daemon restarts on the
 * same state: the command reconnects, attaches to its transfer again, and ends with the delivery's
 * outcome (exit 0), not the lost connection's.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let source: string;

beforeAll(async () => {
  [alice] = await c.startGroup(GROUP, ['alice']);
  source = await h.dir('source');
});

afterAll(() => h.cleanup());

/** Distributes a fresh file throttled so it is mid-transfer for seconds; resolves once alice holds part of it. */
async function startThrottled(name: string, extra: string[]) {
  const size = 8 * MiB;
  const file = join(source, name);
  const sha256 = await writeRandomFile(file, size);
  const distributing = c.distribute(GROUP, [file], ['--rate', '2M', ...extra]);
  await c.transferOf(name);
  await waitUntil(async () => (await heldBytes(alice)) > 0, `alice holding part of ${name}`);
  return { distributing, sha256 };
}

describe('distribute through a server restart', () => {
  it('SIGTERM and a start on the same state mid-transfer: distribute reconnects, says so, and exits 0 with alice delivered', async () => {
    const { distributing, sha256 } = await startThrottled('restart.bin', []);
    expect(await c.server!.stop('SIGTERM')).toBe(0);
    await c.restartServer();
    const result = await distributing;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/lost the daemon \(restarting\?\)/);
    expect(result.stdout).toMatch(/reconnected to the daemon: watching 1 transfer\(s\) again/);
    expect(result.stdout).toMatch(/✓ alice \(\w+\) restart\.bin delivered/);
    expect(result.stdout).toMatch(/1 delivered, 0 pending, 0 failed/);
    expect(result.stderr).not.toMatch(/daemon closed the control connection/);
    expect(await sha256File(finalPath(alice, GROUP, 'restart.bin'))).toBe(sha256);
  });

  it('--json through a kill -9 and a restart: one document, the delivery delivered, exitCode 0', async () => {
    const { distributing, sha256 } = await startThrottled('crash.bin', ['--json']);
    const crashed = c.server!;
    crashed.proc.kill('SIGKILL');
    await crashed.exited;
    await c.restartServer();
    const result = await distributing;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const doc = JSON.parse(result.stdout) as { exitCode: number; reconnects: number; deliveries: Array<{ member: string; state: string; file: string }> };
    expect(doc.exitCode).toBe(0);
    expect(doc.reconnects).toBe(1);
    expect(doc.deliveries.map((d) => [d.member, d.file, d.state])).toEqual([[alice.id, 'crash.bin', 'delivered']]);
    expect(await sha256File(finalPath(alice, GROUP, 'crash.bin'))).toBe(sha256);
  });

  it('a daemon that stays down: distribute gives up after --reconnect-timeout with its own message and exit code 5', async () => {
    const { distributing } = await startThrottled('down.bin', ['--reconnect-timeout', '2s', '--json']);
    expect(await c.server!.stop('SIGTERM')).toBe(0);
    const result = await distributing;
    expect(result.code, result.stdout + result.stderr).toBe(5);
    const doc = JSON.parse(result.stdout) as { error: { code: string; message: string } };
    expect(doc.error.code).toBe('GC_ERR_DAEMON_UNREACHABLE');
    expect(doc.error.message).toMatch(/lost the daemon .* did not come back within 2\.0s/);
    // Started again, the server still delivers it: the distribution was on record.
    const server = await c.restartServer();
    await server.waitForMsg('delivered', { member: alice.id, file: 'down.bin' }, 60_000);
  });
});
