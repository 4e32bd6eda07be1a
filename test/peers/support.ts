// What the swarm tests on a namespace LAN share: what a member holds, and the check that it verified.

import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { Host } from '../harness/netns.js';
import { SERVER_BIN, sha256File, type Lan, type Member } from '../multihost/support.js';

/** Bytes written into a member's partials (they are sparse until pieces arrive). */
export async function allocated(m: Member): Promise<number> {
  const dir = join(m.downloads, '.groupcast-partial');
  let total = 0;
  for (const name of await readdir(dir).catch(() => [])) total += await stat(join(dir, name)).then((s) => s.blocks * 512, () => 0);
  return total;
}

/** Every one of `who` holds the file `name` of `group` with this sha256. */
export async function expectVerified(group: string, name: string, sha256: string, who: Member[]): Promise<void> {
  for (const m of who) expect(await sha256File(join(m.downloads, group, name)), m.host.name).toBe(sha256);
}

/**
 * Revokes `revoked` from `group` while it is frozen (SIGSTOP), so it cannot close its own links: the
 * first of `others` to drop it does so on the server's word (a PEERS without it). Thawed after.
 */
export async function revokeWhileFrozen(lan: Lan, serverHost: Host, serverState: string, group: string, revoked: Member, others: Member[]): Promise<void> {
  revoked.daemon!.proc.kill('SIGSTOP');
  try {
    const result = await lan.run(serverHost, SERVER_BIN, ['members', 'revoke', group, revoked.id, '--state-dir', serverState]);
    expect(result.code, result.stderr).toBe(0);
    const droppedIt = (m: Member) => m.daemon!.waitForLog((l) => l.msg === 'peer link closed' && l.peer === revoked.id.slice(0, 7)
      && JSON.stringify(l.err ?? '').includes('no longer listed'), 30_000);
    await Promise.any(others.map(droppedIt));
  } finally {
    revoked.daemon!.proc.kill('SIGCONT');
  }
}
