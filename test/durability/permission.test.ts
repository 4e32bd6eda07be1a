import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, installForUser } from '../support/daemons.js';
import { listFiles, sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, partialDir, writeRandomFile, type Member } from './cluster.js';

/**
 * A member running as `nobody` whose group folder belongs to root (0755): it receives the whole file
 * into its own partial folder but may not link it into place. It fails with "permission denied", the
 * server does not retry (the member's operator has to fix the folder), the operator's output and
 * status say why, and nothing is left on the member's disk. The other member gets the file.
 */
const root = process.getuid?.() === 0;
if (!root) console.warn('[permission] skipped: running a member as another user needs root');

const NOBODY = 65534;
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let bob: Member;
/** Why the member cannot run as nobody here, if it cannot. */
let unavailable: string | undefined;

afterAll(() => h.cleanup());

describe.skipIf(!root)('a member that may not write its group folder', () => {
  beforeAll(async () => {
    const installed = await installForUser(h, { uid: NOBODY, gid: NOBODY });
    if ('unavailable' in installed) {
      unavailable = installed.unavailable;
      console.warn(`[permission] skipped: ${unavailable}`);
      return;
    }
    alice = await c.member('alice', [GROUP]);
    bob = await c.member('bob', [GROUP]);
    const home = await h.dir('alice-home');
    // The identity was made by root (`id`); the member's own directories become nobody's.
    execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, alice.state, alice.downloads, home]);
    const groupDir = join(alice.downloads, GROUP);
    await mkdir(groupDir);
    await chmod(groupDir, 0o755);
    // HOME: nobody cannot look into root's ~/.config for a config file.
    alice.runAs = { uid: NOBODY, gid: NOBODY, env: { HOME: home, XDG_CONFIG_HOME: join(home, '.config') }, clientBin: installed.clientBin };
    await c.startServer([{ name: GROUP, members: [alice, bob] }]);
    await c.startOnline([alice, bob]);
  });

  it('fails with "permission denied" at once, reported to the operator, nothing left behind', async ({ skip }) => {
    if (unavailable) skip(unavailable);
    expect((await stat(`/proc/${alice.daemon!.proc.pid}`)).uid).toBe(NOBODY);
    const file = join(await h.dir('source'), 'perm.bin');
    const size = 4 * MiB;
    const sha256 = await writeRandomFile(file, size);
    const result = await c.distribute(GROUP, [file]);
    expect(result.code, result.stdout + result.stderr).toBe(1);
    expect(result.stdout).toMatch(/alice.*perm\.bin failed: permission denied: cannot place file: EACCES/);
    expect(result.stdout).toMatch(/1 delivered, 0 pending, 1 failed/);

    // It was received whole into the partial folder, then refused at placement, once: no retry.
    const accepted = alice.daemon!.logs.filter((l) => l.msg === 'accepted' && l.file === 'perm.bin');
    const failures = alice.daemon!.logs.filter((l) => l.msg === 'transfer failed' && l.file === 'perm.bin');
    expect(accepted).toHaveLength(1);
    expect(failures.map((l) => l.outcome)).toEqual(['permission denied']);
    const failed = (await c.deliveries()).find((d) => d.member === alice.id);
    expect(failed).toMatchObject({ state: 'failed', attempts: 1, bytesSent: size });
    expect(failed?.reason).toMatch(/^permission denied: cannot place file: EACCES/);

    expect(await readdir(join(alice.downloads, GROUP))).toEqual([]);
    expect(await readdir(partialDir(alice))).toEqual([]);
    expect(await listFiles(alice.downloads)).toEqual([]);
    expect(await sha256File(finalPath(bob, GROUP, 'perm.bin'))).toBe(sha256);
  });
});
