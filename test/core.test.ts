import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort, type Daemon } from './support/daemons.js';
import { listFiles, sha256File } from './support/files.js';

/**
 * The core loop with real processes on loopback multicast (interface 127.0.0.1): a server, two
 * members of Developers and one outsider; a 50 MiB file distributed and verified on both members.
 */
const h = harness();
const port = String(testPort());
const network = ['--interface', '127.0.0.1', '--port', port];

interface Member { name: string; state: string; downloads: string; id: string; daemon?: Daemon }

describe('core loop on loopback', () => {
  let serverState: string;
  let server: Daemon;
  const members: Record<'alice' | 'bob' | 'carol', Member> = {} as never;

  beforeAll(async () => {
    serverState = await h.dir('server');
    for (const name of ['alice', 'bob', 'carol'] as const) {
      const state = await h.dir(`${name}-state`);
      members[name] = { name, state, downloads: await h.dir(`${name}-dl`), id: await idOf(h, CLIENT_BIN, state) };
    }
    const serverId = await idOf(h, SERVER_BIN, serverState);
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({
      groups: [
        { name: 'Developers', members: [members.alice.id, members.bob.id] },
        { name: 'Designers', members: [members.carol.id] },
        { name: 'Empty', members: [] },
      ],
    }));
    server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', ...network]);
    await server.waitForMsg('group-server started');
    const joins = { alice: ['Developers'], bob: ['Developers', 'Nonexistent'], carol: ['Designers'] };
    for (const m of Object.values(members)) {
      const joinArgs = joins[m.name as keyof typeof joins].flatMap((g) => ['--join', g]);
      m.daemon = h.spawn(m.name, CLIENT_BIN, [...joinArgs, '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name, ...network]);
    }
    for (const m of Object.values(members)) await server.waitForMsg('member online', { member: m.id });
  });

  afterAll(() => h.cleanup());

  it('refuses a join to an unknown group with a clear reason in the member log', async () => {
    const line = await members.bob.daemon!.waitForLog((l) => l.msg === 'join refused' && l.group === 'Nonexistent');
    expect(line.reason).toBe('unknown group');
  });

  it('distributes a 50 MiB file to both members, verified, and nothing to the outsider', async () => {
    const file = join(serverState, 'payload.bin');
    const content = randomBytes(50 * 1024 * 1024);
    await writeFile(file, content);
    const expected = createHash('sha256').update(content).digest('hex');

    const result = await h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', serverState], 120_000);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/2 delivered, 0 pending, 0 failed/);

    for (const m of [members.alice, members.bob]) {
      expect(await sha256File(join(m.downloads, 'Developers', 'payload.bin'))).toBe(expected);
      expect(await listFiles(m.downloads)).toEqual([join(m.downloads, 'Developers', 'payload.bin')]);
    }
    expect(await listFiles(members.carol.downloads)).toEqual([]);
    expect(members.carol.daemon!.logs.some((l) => l.msg === 'offer')).toBe(false);
  });

  it('reports a member that fails, with the reason, and exits non-zero', async () => {
    const clash = join(members.bob.downloads, 'Developers', 'notes.txt');
    await mkdir(join(members.bob.downloads, 'Developers'), { recursive: true });
    await writeFile(clash, 'bob already has a different notes.txt');
    const file = join(serverState, 'notes.txt');
    await writeFile(file, 'release notes');

    const result = await h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', serverState, '--json'], 60_000);
    expect(result.code).toBe(1);
    const summary = JSON.parse(result.stdout) as { exitCode: number; deliveries: Array<{ member: string; state: string; reason: string }> };
    expect(summary.exitCode).toBe(1);
    const byMember = new Map(summary.deliveries.map((d) => [d.member, d]));
    expect(byMember.get(members.alice.id)?.state).toBe('delivered');
    expect(byMember.get(members.bob.id)?.state).toBe('failed');
    expect(byMember.get(members.bob.id)?.reason).toMatch(/name clash/);
  });

  it('exits 4 with a clear message when nobody has joined the group', async () => {
    const file = join(serverState, 'empty-group.txt');
    await writeFile(file, 'x');
    const result = await h.run(SERVER_BIN, ['distribute', 'Empty', file, '--state-dir', serverState], 30_000);
    expect(result.code, result.stderr).toBe(4);
    expect(result.stdout).toMatch(/no member has joined Empty/);
  });

  it('rejects bad flags and unknown groups with exit code 2', async () => {
    const bad = await h.run(SERVER_BIN, ['distribute', 'Developers', '--state-dir', serverState]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/Not enough non-option arguments|files/);
    const unknown = await h.run(SERVER_BIN, ['distribute', 'Nope', join(serverState, 'notes.txt'), '--state-dir', serverState]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no group named "Nope"/);
  });
});
