import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Capability, loadOrCreateIdentity, Outcome } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, harness, testPort, type Daemon } from '../support/daemons.js';
import { HostileServer, outcome } from '../security/hostile-server.js';
import { snapshot } from '../security/tools.js';
import { craftTree, type Crafted } from './tree-fixtures.js';

/**
 * Hostile trees from a server the member trusts (PROTOCOL.md §7.7): the real server refuses them at
 * `distribute`, so a server of the test's own sends crafted manifests. The member declines every one
 * (BAD_NAME), or hangs up on one that breaks the manifest's structure, and writes nothing outside
 * `DIR/<group>` and its own partial and versions folders.
 */
const h = harness();
const port = testPort();
const text = (s: string): Buffer => Buffer.from(s);

describe('hostile trees', () => {
  let root: string;
  let dl: string;
  let hostile: HostileServer;
  let member: Daemon;

  beforeAll(async () => {
    root = await h.dir('trees');
    dl = join(root, 'dl');
    await mkdir(join(root, 'outside'));
    await writeFile(join(root, 'outside', 'target.txt'), 'outside, must not change');
    // A group folder that is a link to elsewhere: no tree may be placed through it.
    await mkdir(dl);
    await symlink(join(root, 'outside'), join(dl, 'Linked'));
    hostile = new HostileServer(await loadOrCreateIdentity(join(root, 'hostile'), 'hostile'), ['Developers', 'Linked'], undefined, true);
    await hostile.start(port);
    member = h.spawn('member', CLIENT_BIN, [
      '--join', 'Developers', '--join', 'Linked', '--server-id', hostile.identity.signer.id, '--state-dir', join(root, 'state'), '--downloads', dl,
      '--interface', '127.0.0.1', '--port', String(port), '--no-peers',
    ]);
    await hostile.connected;
  });

  afterAll(async () => {
    await hostile?.close();
    await h.cleanup();
  });

  it('declines unsafe paths and collisions, hangs up on a manifest over the entry cap, and writes nothing outside', async () => {
    expect(hostile.memberCaps & Capability.TREES).toBe(Capability.TREES);
    const outsideOnly = (path: string): boolean => path === 'state' || path.startsWith('state/');
    const before = await snapshot(root, outsideOnly);
    const unsafe: Array<[string, Crafted[]]> = [
      ['a parent component', [{ path: '../escape.txt', content: text('x') }]],
      ['a parent component inside a directory', [{ path: 'a', dir: true }, { path: 'a/../../../outside/target.txt', content: text('x') }]],
      ['an absolute path', [{ path: join(root, 'outside', 'pwned.txt'), content: text('x') }]],
      ['a path into the partial folder', [{ path: '.groupcast-partial', dir: true }]],
      ['a case collision', [{ path: 'README', content: text('a') }, { path: 'readme', content: text('b') }]],
      ['an NFC collision', [{ path: 'caf\u0065\u0301', content: text('a') }, { path: 'caf\u00e9', content: text('b') }]],
      ['a file under a file', [{ path: 'a', content: text('a') }, { path: 'a/b', content: text('b') }]],
      ['a file without its directory', [{ path: 'x/y', content: text('y') }]],
      ['a path over 4 KiB', [...Array.from({ length: 17 }, (_, i): Crafted => ({ path: Array.from({ length: i + 1 }, () => 'd'.repeat(250)).join('/'), dir: true })),
        { path: `${Array.from({ length: 17 }, () => 'd'.repeat(250)).join('/')}/f`, content: text('deep') }]],
    ];
    for (const [what, entries] of unsafe) {
      const { manifest, data } = craftTree(entries);
      expect(outcome(await hostile.offerTree('Developers', 'evil', manifest, data)), what).toBe(Outcome.BAD_NAME);
    }
    const linked = craftTree([{ path: 'f', content: text('f\n') }]);
    expect(outcome(await hostile.offerTree('Linked', 'through-a-link', linked.manifest, linked.data))).toBe(Outcome.NAME_CLASH);
    // The control: an honest tree is accepted and placed, so the declines are the member's judgement.
    const honest = craftTree([{ path: '.env', content: text('A=1\n') }, { path: 'd', dir: true }, { path: 'd/f', content: text('f\n') }]);
    const replies = await hostile.offerTree('Developers', 'ok', honest.manifest, honest.data);
    expect(replies.map((reply) => (reply === 'closed' ? reply : reply.type))).toEqual(['accept', 'result']);
    expect(await readFile(join(dl, 'Developers', 'ok', 'd', 'f'), 'utf8')).toBe('f\n');
    // Over MAX_TREE_ENTRIES (100,000 entries): the manifest itself is refused, and the connection with it.
    const huge = craftTree(Array.from({ length: 100_000 }, (_, i) => ({ path: `f${String(i).padStart(6, '0')}`, content: Buffer.alloc(0) })));
    expect(outcome(await hostile.offerTree('Developers', 'huge', huge.manifest, huge.data))).toBe('closed');

    const after = await snapshot(root, outsideOnly);
    const added = [...after.keys()].filter((path) => !before.has(path));
    const changed = [...before.keys()].filter((path) => after.get(path) !== before.get(path));
    expect(changed).toEqual([]);
    // Only the honest tree: its link, its version, and the (empty) member folders.
    expect(added.every((path) => path.startsWith('dl/Developers') || path.startsWith('dl/.groupcast-versions') || path.startsWith('dl/.groupcast-partial')), added.join('\n')).toBe(true);
    expect(added.filter((path) => path.startsWith('dl/Developers'))).toEqual(['dl/Developers', 'dl/Developers/ok']);
    const declines = member.logs.filter((l) => l.msg === 'declined').map((l) => l.outcome);
    expect(declines.filter((o) => o === 'unsafe name')).toHaveLength(unsafe.length);
  });
});
