import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { access, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveMemberId } from '../../packages/server/src/operator/operations.js';
import type { PeerId } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort, type Daemon } from '../support/daemons.js';

/**
 * What a new operator trips over first, each through the real CLIs: errors as JSON with --json, the
 * short ids the tables show accepted by members revoke, per-command help for group-client, links in
 * the docs that lead somewhere, an unknown group as a usage error, and busy ports named plainly.
 */
const h = harness();
const ROOT = resolve(import.meta.dirname, '../..');
const udpPort = testPort();
const network = ['--interface', '127.0.0.1', '--port', String(udpPort)];

let serverState: string;
let server: Daemon;
let tcpPort: number;
const ids: Record<'alice' | 'bob', string> = { alice: '', bob: '' };

const serverCli = (...args: string[]) => h.run(SERVER_BIN, [...args, '--state-dir', serverState]);

beforeAll(async () => {
  serverState = await h.dir('server');
  for (const name of ['alice', 'bob'] as const) ids[name] = await idOf(h, CLIENT_BIN, await h.dir(`${name}-state`));
  const config = join(serverState, 'config.json');
  await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: [ids.alice, ids.bob] }] }));
  server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', ...network]);
  tcpPort = Number((await server.waitForMsg('group-server started')).tcpPort);
});

afterAll(() => h.cleanup());

describe('--json errors', () => {
  it('a failed command with --json prints one JSON error document on stdout, and nothing on stderr', async () => {
    const away = await h.run(SERVER_BIN, ['status', '--json', '--state-dir', await h.dir('nobody')]);
    expect(away.code).toBe(1);
    expect(away.stderr).toBe('');
    expect(JSON.parse(away.stdout)).toEqual({ error: { code: 'GC_ERR_DAEMON_UNREACHABLE', message: expect.stringMatching(/no group-server is running/) } });

    const badFlag = await serverCli('members', '--bogus', '--json');
    expect(badFlag.code).toBe(2);
    expect(JSON.parse(badFlag.stdout)).toMatchObject({ error: { code: 'GC_ERR_USAGE', message: expect.stringMatching(/bogus/) } });

    const member = await h.run(CLIENT_BIN, ['status', '--json', '--recent', '-1', '--state-dir', await h.dir('m')]);
    expect(member.code).toBe(2);
    expect(JSON.parse(member.stdout)).toMatchObject({ error: { code: 'GC_ERR_USAGE', message: expect.stringMatching(/--recent/) } });
  });

  it('without --json, errors stay one line of text on stderr', async () => {
    const away = await h.run(SERVER_BIN, ['status', '--state-dir', await h.dir('nobody')]);
    expect(away.code).toBe(1);
    expect(away.stdout).toBe('');
    expect(away.stderr).toMatch(/^group-server: no group-server is running/);
  });
});

describe('unknown group', () => {
  it('distribute to a group the server does not have is bad usage: exit 2', async () => {
    const file = join(serverState, 'notes.txt');
    await writeFile(file, 'x');
    const plain = await serverCli('distribute', 'Nope', file);
    expect(plain.code, plain.stderr).toBe(2);
    expect(plain.stderr).toMatch(/no group named "Nope"/);
    const json = await serverCli('distribute', 'Nope', file, '--json');
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'GC_ERR_UNKNOWN_GROUP' } });
  });
});

describe('members revoke with a short id', () => {
  it('accepts the 7-character id that status shows, and revokes that member', async () => {
    const table = await serverCli('status');
    const short = ids.alice.slice(0, 7);
    expect(table.stdout).toMatch(new RegExp(`^${short} `, 'm'));
    const revoked = await serverCli('members', 'revoke', 'Developers', short);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain(`revoked ${ids.alice} in Developers`);
    const members = JSON.parse((await serverCli('members', '--json')).stdout) as Array<{ id: string; allowedIn: string[] }>;
    expect(members.find((m) => m.id === ids.alice)?.allowedIn ?? []).toEqual([]);
    expect(members.find((m) => m.id === ids.bob)?.allowedIn).toEqual(['Developers']);
  });

  it('refuses a prefix that is too short or matches no known member, with exit 2', async () => {
    const tooShort = await serverCli('members', 'revoke', 'Developers', ids.bob.slice(0, 6));
    expect(tooShort.code).toBe(2);
    expect(tooShort.stderr).toMatch(/at least its first 7 characters/);
    const unknown = await serverCli('members', 'revoke', 'Developers', ids.bob.slice(0, 6) + (ids.bob[6] === 'A' ? 'B' : 'A'));
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no known member has an id starting with/);
  });

  it('refuses an ambiguous prefix and names the candidates', () => {
    const a = `ABCDEFG-${'A'.repeat(7)}` as PeerId;
    const b = `ABCDEFG-${'B'.repeat(7)}` as PeerId;
    expect(() => resolveMemberId('abcdefg', [a, b])).toThrow(/matches 2 members \(ABCDEFG-AAAAAAA, ABCDEFG-BBBBBBB\): give more characters/);
    expect(resolveMemberId('ABCDEFG-B', [a, b])).toBe(b);
  });
});

describe('group-client <command> --help', () => {
  for (const command of ['status', 'groups', 'id', 'init']) {
    it(`${command} --help shows its own options and examples, not the daemon's`, async () => {
      const { code, stdout } = await h.run(CLIENT_BIN, [command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toMatch(/^Examples:/m);
      for (const daemonFlag of ['--join', '--code', '--downloads', '--on-receive', '--metrics', '--trust-first-server']) expect(stdout).not.toContain(daemonFlag);
    });
  }

  it('the daemon itself still lists every daemon flag', async () => {
    const { stdout } = await h.run(CLIENT_BIN, ['--help']);
    for (const daemonFlag of ['--join', '--code', '--downloads', '--on-receive', '--metrics']) expect(stdout).toContain(daemonFlag);
  });
});

describe('documentation links', () => {
  it('every relative link and .md path in README.md and docs/ names a file in the repository', async () => {
    for (const doc of ['README.md', 'docs/OPERATIONS.md', 'docs/SECURITY.md', 'docs/PROTOCOL.md', 'docs/DESIGN.md']) {
      const text = await readFile(join(ROOT, doc), 'utf8');
      const targets = [
        ...[...text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)].map((m) => [join(ROOT, dirname(doc), m[1] ?? '')]),
        // A path in backquotes may be meant from the document or from the repository's root.
        ...[...text.matchAll(/`([^`\s]+\.md)`/g)].map((m) => [join(ROOT, dirname(doc), m[1] ?? ''), join(ROOT, m[1] ?? '')]),
      ].filter(([target]) => !/^[a-z]+:/.test(target ?? ''));
      for (const candidates of targets) {
        const found = await Promise.all(candidates.map((path) => access(path).then(() => true, () => false)));
        expect(found.some(Boolean), `${doc} names ${candidates.join(' or ')}`).toBe(true);
      }
    }
  });
});

describe('busy ports', () => {
  const listeners: Array<Server | UdpSocket> = [];
  afterAll(() => {
    for (const listener of listeners) listener.close();
  });

  const startOther = async (extra: string[]) => h.run(SERVER_BIN, ['--state-dir', await h.dir('other'), ...extra, '--log-format', 'json'], 30_000);

  it('a TCP data port in use is named plainly, exit 1', async () => {
    const result = await startOther([...network, '--tcp-port', String(tcpPort)]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`group-server: TCP port ${tcpPort} on 127.0.0.1 is already in use (another group-server?`);
    expect(result.stderr).not.toMatch(/^group-server: .*EADDRINUSE/m);
  });

  it('a metrics port in use is named plainly, exit 1', async () => {
    const taken = createServer();
    listeners.push(taken);
    await new Promise<void>((done) => taken.listen(0, '127.0.0.1', done));
    const port = (taken.address() as { port: number }).port;
    const result = await startOther(['--interface', '127.0.0.1', '--port', String(testPort()), '--tcp-port', '0', '--metrics', `127.0.0.1:${port}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`group-server: HTTP (--metrics) port ${port} on 127.0.0.1 is already in use`);
  });

  it('a UDP control port held by a program that does not share it is named plainly, exit 1', async () => {
    const taken = createSocket({ type: 'udp4', reuseAddr: false });
    listeners.push(taken);
    const port = testPort();
    await new Promise<void>((done) => taken.bind(port, done));
    const result = await startOther(['--interface', '127.0.0.1', '--port', String(port), '--tcp-port', '0']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`group-server: UDP port ${port} on 127.0.0.1 is already in use`);
  });
});
