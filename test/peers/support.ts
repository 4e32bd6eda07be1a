// What the swarm tests on a namespace LAN share: what a member holds, and the check that it verified.

import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { sha256File, type Member } from '../multihost/support.js';

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
