import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateIdentity, Outcome } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, harness, testPort, type Daemon } from '../support/daemons.js';
import { HostileServer, outcome } from './hostile-server.js';
import { snapshot } from './tools.js';

/**
 * A hostile server: the real one refuses unsafe names before anything is sent, so this test plays a
 * server of its own, built from the shared codecs, that the member pins. It offers files whose names
 * try to escape `DIR/<group>` or overwrite what is there; the member must decline every one, and
 * nothing on disk may change but the one honest file offered as a control.
 */
const h = harness();
const port = testPort();
const network = ['--interface', '127.0.0.1', '--port', String(port)];


describe('hostile file names from a server the member trusts', () => {
  let root: string;
  let dl: string;
  let hostile: HostileServer;
  let member: Daemon;

  beforeAll(async () => {
    root = await h.dir('names');
    dl = join(root, 'dl');
    await mkdir(join(dl, 'Developers', 'existing-dir'), { recursive: true });
    await mkdir(join(root, 'outside'));
    await writeFile(join(root, 'outside', 'target.txt'), 'outside, must not change');
    await writeFile(join(dl, 'Developers', 'notes.txt'), 'the member wrote this');
    await symlink(join(root, 'outside', 'target.txt'), join(dl, 'Developers', 'link.txt'));
    // A group folder that is a link to elsewhere.
    await symlink(join(root, 'outside'), join(dl, 'Linked'));

    hostile = new HostileServer(await loadOrCreateIdentity(join(root, 'hostile'), 'hostile'), ['Developers', 'Linked']);
    await hostile.start(port);
    member = h.spawn('member', CLIENT_BIN, [
      '--join', 'Developers', '--join', 'Linked', '--server-id', hostile.identity.signer.id,
      '--state-dir', join(root, 'state'), '--downloads', dl, ...network,
    ]);
    await hostile.connected;
  });

  afterAll(async () => {
    await hostile?.close();
    await h.cleanup();
  });

  it('declines every unsafe or clashing name, writes nothing outside DIR/<group>, and overwrites nothing', async () => {
    const before = await snapshot(root, (path) => path === 'state' || path.startsWith('state/'));

    const absolute = join(root, 'outside', 'pwned.txt');
    const unsafe: Array<[string, string]> = [
      ['Developers', '../escape.txt'],
      ['Developers', '../../outside/target.txt'],
      ['Developers', '..'],
      ['Developers', '.'],
      ['Developers', absolute],
      ['Developers', '/etc/passwd'],
      ['Developers', 'nul\u0000byte.txt'],
      ['Developers', 'bell\u0007.txt'],
      ['Developers', 'escape\u001b[31m.txt'],
      ['Developers', 'new\nline.txt'],
      ['Developers', 'c1\u009b.txt'],
      ['Developers', 'back\\slash.txt'],
      ['Developers', '.groupcast-partial'],
      ['Developers', 'x'.repeat(4096)],
      ['Developers', 'é'.repeat(128)],
      ['Developers', ' leading-space.txt'],
    ];
    for (const [group, name] of unsafe) {
      expect(outcome(await hostile.offer(group, name)), JSON.stringify(name.slice(0, 40))).toBe(Outcome.BAD_NAME);
    }
    const clashes: Array<[string, string]> = [
      ['Developers', 'existing-dir'],
      ['Developers', 'notes.txt'],
      ['Developers', 'link.txt'],
      ['Linked', 'inside-a-linked-folder.txt'],
    ];
    for (const [group, name] of clashes) expect(outcome(await hostile.offer(group, name)), name).toBe(Outcome.NAME_CLASH);
    for (const group of ['../Developers', '.groupcast-partial', 'Designers']) {
      expect(outcome(await hostile.offer(group, 'a.txt')), group).toBe(Outcome.NOT_MEMBER);
    }

    // The control: an honest offer is accepted, so the declines above are the member's judgement, not a broken harness.
    const honest = await hostile.offer('Developers', 'ok.txt', Buffer.from('fine\n'));
    expect(honest.map((reply) => (reply === 'closed' ? reply : reply.type))).toEqual(['accept', 'result']);
    expect(await readFile(join(dl, 'Developers', 'ok.txt'), 'utf8')).toBe('fine\n');

    // A name longer than the wire allows (4 KiB) breaks the protocol: the member hangs up instead of writing.
    expect(outcome(await hostile.offer('Developers', 'y'.repeat(4097)))).toBe('closed');

    const after = await snapshot(root, (path) => path === 'state' || path.startsWith('state/'));
    const added = [...after.keys()].filter((path) => !before.has(path));
    const changed = [...before.keys()].filter((path) => after.get(path) !== before.get(path));
    expect(added).toEqual(['dl/Developers/ok.txt']);
    expect(changed).toEqual([]);
    const declines = member.logs.filter((l) => l.msg === 'declined').map((l) => l.outcome);
    expect(declines.filter((o) => o === 'unsafe name')).toHaveLength(unsafe.length);
    expect(declines.filter((o) => o === 'name clash')).toHaveLength(clashes.length);
  });
});

describe('a man in the middle at the pinned server\'s address', () => {
  const mitmPort = testPort();

  afterAll(() => h.cleanup());

  it('the member refuses a TLS key other than the pinned id, and says nothing over that connection', async () => {
    const root = await h.dir('mitm');
    const pinned = await loadOrCreateIdentity(join(root, 'pinned'), 'pinned');
    // It can replay or relay the real server's datagrams, but over TLS it can only show its own key.
    const mitm = new HostileServer(pinned, ['Developers'], await loadOrCreateIdentity(join(root, 'impostor'), 'impostor'));
    await mitm.start(mitmPort);
    try {
      const member = h.spawn('mitm-member', CLIENT_BIN, [
        '--join', 'Developers', '--server-id', pinned.signer.id, '--state-dir', join(root, 'state'), '--downloads', join(root, 'dl'),
        '--interface', '127.0.0.1', '--port', String(mitmPort),
      ]);
      const refused = await member.waitForMsg('server key does not match the pinned id; disconnecting');
      expect(refused.pinned).toBe(pinned.signer.id);
      expect(refused.presented).not.toBe(pinned.signer.id);
      expect(member.logs.some((l) => l.msg === 'connected')).toBe(false);
    } finally {
      await mitm.close();
    }
  });
});
