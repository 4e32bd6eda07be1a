import { open } from 'node:fs/promises';
import { expect } from 'vitest';
import { waitForNew, type Cluster, type Member } from '../durability/cluster.js';

/**
 * Distributes `path` (a file or a tree named `name`) to `group` and returns the server's "delivered" line
 * for `member`: `bytesSent` is what the server's stream carried to it for that delivery.
 */
export async function deliverTo(c: Cluster, group: string, member: Member, path: string, name: string): Promise<{ transfer: string; bytesSent: number }> {
  const recorded = waitForNew(c.server!, 'distribution recorded', { file: name });
  const ran = c.distribute(group, [path]);
  const transfer = String((await recorded).transfer);
  const delivered = await c.server!.waitForMsg('delivered', { transfer, member: member.id }, 120_000);
  const result = await ran;
  expect(result.code, result.stdout + result.stderr).toBe(0);
  return { transfer, bytesSent: Number(delivered.bytesSent) };
}

/** Writes `data` over `path` at `at`: a new version changed in place. */
export async function overwrite(path: string, at: number, data: Buffer): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(data, 0, data.length, at);
  } finally {
    await handle.close();
  }
}
