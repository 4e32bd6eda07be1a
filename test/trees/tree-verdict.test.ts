import { chmod, mkdir, mkdtemp, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { placementFor } from '../../packages/client/src/receive/download-area.js';
import type { ReceivedRecord } from '../../packages/client/src/receive/received-log.js';
import { appliedMode } from '../../packages/client/src/receive/tree-staging.js';
import { judgeExistingTree, treeLinkTarget, versionPath, type TreeStamps, type TreeVerdict } from '../../packages/client/src/receive/versions.js';
import type { Manifest } from '../../packages/shared/src/index.js';
import { craftTree } from './tree-fixtures.js';

/**
 * The tree case of versions.ts (tree-design.md): what a tree distribution finds at `<group>/<name>`
 * decides between placing it, "already present", replacing what groupcast placed, and NAME_CLASH.
 */
const GROUP = 'Developers';
const NAME = 'site';
const OLD = 'a'.repeat(32);
const NEW = 'b'.repeat(32);
let root: string;
const CONTENT: Record<string, string> = { '.env': 'A=1\n', 'd/f': 'f\n' };
const tree = craftTree([{ path: '.env', content: Buffer.from(CONTENT['.env']!) }, { path: 'd', dir: true }, { path: 'd/f', content: Buffer.from(CONTENT['d/f']!) }]);
const signal = new AbortController().signal;

/** Lays a placed version out as the member does: files and directories with their modes, and the link. */
async function place(transfer: string, manifest: Manifest): Promise<string> {
  const dir = versionPath(root, GROUP, NAME, transfer);
  await mkdir(dir, { recursive: true });
  for (const entry of manifest.entries) {
    const path = join(dir, entry.path);
    if (entry.kind === 'directory') await mkdir(path);
    else await writeFile(path, CONTENT[entry.path]!);
    await chmod(path, appliedMode(entry.mode));
  }
  await mkdir(join(root, GROUP), { recursive: true });
  await symlink(treeLinkTarget(GROUP, NAME, transfer), join(root, GROUP, NAME));
  return dir;
}

const record = (transfer: string): ReceivedRecord => ({
  transfer, group: GROUP, name: NAME, sha256: '', size: 0, path: join(root, GROUP, NAME), time: '', kind: 'tree',
});
const judge = (rec: ReceivedRecord | undefined, manifests: Record<string, Manifest> = { [OLD]: tree.manifest }, known?: TreeStamps) => judgeExistingTree(
  placementFor(root, GROUP, NAME), { group: GROUP, name: NAME, transfer: NEW, manifest: tree.manifest }, rec, async (hex) => manifests[hex], signal, known,
);
/** The stamps of a replace verdict, as if that check had begun `seconds` later (past the racy window). */
const later = (verdict: TreeVerdict, seconds: number): TreeStamps => {
  if (verdict.kind !== 'replace') throw new Error(`expected replace, got ${verdict.kind}`);
  return { ...verdict.stamps, takenAtNs: verdict.stamps.takenAtNs + BigInt(seconds) * 1_000_000_000n };
};

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'gc-verdict-'));
});
afterEach(() => rm(root, { recursive: true, force: true }));

describe('what a tree finds at its final path', () => {
  it('nothing: place it', async () => {
    expect(await judge(undefined)).toEqual({ kind: 'absent' });
  });

  it('the version groupcast placed, unchanged: replace it', async () => {
    await place(OLD, tree.manifest);
    expect(await judge(record(OLD))).toMatchObject({ kind: 'replace', record: { transfer: OLD } });
  });

  it('this very tree, placed before a crash kept it from the log: already present', async () => {
    await place(NEW, tree.manifest);
    expect(await judge(undefined)).toEqual({ kind: 'present' });
  });

  it.each([
    ['a file edited', async (dir: string) => writeFile(join(dir, 'd', 'f'), 'edited\n'), 'was edited'],
    ['a file added', async (dir: string) => writeFile(join(dir, 'd', 'new'), 'x'), 'added'],
    ['a file removed', async (dir: string) => rm(join(dir, '.env')), 'missing'],
    ['a mode changed', async (dir: string) => chmod(join(dir, 'd', 'f'), 0o600), 'mode'],
  ])('%s since: a clash that says so', async (_what, change, says) => {
    const dir = await place(OLD, tree.manifest);
    await change(dir);
    const verdict = await judge(record(OLD));
    expect(verdict.kind).toBe('clash');
    expect(verdict.kind === 'clash' && verdict.reason).toContain(says);
  });

  it('checked again with the stamps of a check that found it unchanged, a file whose stamp holds is not hashed again', async () => {
    const dir = await place(OLD, tree.manifest);
    const first = await judge(record(OLD));
    // Rewritten behind the stamps' back: the stamp is made to match the file as it is now, so only a hash could tell.
    await writeFile(join(dir, 'd', 'f'), 'F\n');
    const known = later(first, 3);
    const now = await stat(join(dir, 'd', 'f'), { bigint: true });
    known.files.set('d/f', { ...known.files.get('d/f')!, ino: Number(now.ino), mtimeNs: now.mtimeNs, ctimeNs: now.ctimeNs });
    known.takenAtNs = now.ctimeNs + 3_000_000_000n;
    expect(await judge(record(OLD), undefined, known)).toMatchObject({ kind: 'replace' });
    // Without stamps it is hashed, and the edit found.
    expect(await judge(record(OLD))).toMatchObject({ kind: 'clash', reason: expect.stringContaining('was edited') });
  });

  it('an edit that keeps the size and puts the mtime back is still found: its ctime moved, so its stamp no longer holds', async () => {
    const dir = await place(OLD, tree.manifest);
    const path = join(dir, 'd', 'f');
    // A whole second, so that putting it back is exact.
    const SECONDS = 1_700_000_000;
    await utimes(path, SECONDS, SECONDS);
    const before = await stat(path, { bigint: true });
    const first = await judge(record(OLD));
    await writeFile(path, 'F\n');
    await utimes(path, SECONDS, SECONDS);
    const after = await stat(path, { bigint: true });
    expect([after.size, after.mtimeNs, after.ino]).toEqual([before.size, before.mtimeNs, before.ino]);
    expect(await judge(record(OLD), undefined, later(first, 3))).toMatchObject({ kind: 'clash', reason: expect.stringContaining('"d/f" was edited') });
  });

  it('stamps taken within the racy window of a change are not trusted: the file is hashed', async () => {
    const dir = await place(OLD, tree.manifest);
    const first = await judge(record(OLD));
    await writeFile(join(dir, 'd', 'f'), 'F\n');
    const now = await stat(join(dir, 'd', 'f'), { bigint: true });
    if (first.kind !== 'replace') throw new Error(first.kind);
    // The stamp matches the file as it is, but it was changed within 2 s of when the stamp was taken.
    first.stamps.files.set('d/f', { ...first.stamps.files.get('d/f')!, ino: Number(now.ino), mtimeNs: now.mtimeNs, ctimeNs: now.ctimeNs });
    const racy = { ...first.stamps, takenAtNs: now.ctimeNs + 1_000_000_000n };
    expect(await judge(record(OLD), undefined, racy)).toMatchObject({ kind: 'clash', reason: expect.stringContaining('was edited') });
  });

  it('a real directory, a link elsewhere, no record, a lost manifest, a linked group folder: clashes', async () => {
    await mkdir(join(root, GROUP, NAME), { recursive: true });
    expect((await judge(record(OLD))).kind).toBe('clash');
    await rm(join(root, GROUP), { recursive: true });
    await place(OLD, tree.manifest);
    expect((await judge(undefined)).kind).toBe('clash');
    expect((await judge(record(OLD), {})).kind).toBe('clash');
    expect((await judge(record('c'.repeat(32)))).kind).toBe('clash');
    await rm(join(root, GROUP), { recursive: true });
    await mkdir(join(root, 'elsewhere'));
    await symlink(join(root, 'elsewhere'), join(root, GROUP));
    expect(await judge(undefined)).toMatchObject({ kind: 'clash', reason: `${GROUP} exists and is not a directory` });
  });
});
