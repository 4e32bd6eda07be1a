import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, realpath, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { Daemon, harness, testPort } from '../support/daemons.js';

/**
 * The daemons as an operator installs them: the three workspaces packed (`npm pack`), installed with
 * `npm install -g --prefix`, and run as `<prefix>/bin/group-server` and `group-client` — no checkout,
 * no npx. scripts/check-install.sh makes the tarballs and the install (it needs the registry for the
 * third-party dependencies, see there) and runs this file with GC_INSTALL_PACKS and
 * GC_INSTALL_PREFIX; without them (in `npm test`) it is skipped with one line.
 */
const PACKS = process.env.GC_INSTALL_PACKS;
const PREFIX = process.env.GC_INSTALL_PREFIX;
const ROOT = resolve(import.meta.dirname, '../..');
const run = promisify(execFile);
const h = harness();
const started: Daemon[] = [];

if (!PACKS || !PREFIX) console.warn('[install] skipped: run scripts/check-install.sh (packs, installs with npm install -g, then runs this file)');

afterAll(async () => {
  await Promise.all(started.map((daemon) => daemon.stop('SIGKILL')));
  await h.cleanup();
});

const bin = (name: string): string => join(PREFIX ?? '', 'bin', name);

/** An installed binary run directly (its #! line finds node), as a daemon whose JSON log is followed. */
function daemon(name: string, program: string, args: string[], env: Record<string, string>): Daemon {
  const proc = spawn(bin(program), [...args, '--log-format', 'json'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const child = new Daemon(name, proc);
  started.push(child);
  return child;
}

async function tarList(file: string): Promise<string[]> {
  const { stdout } = await run('tar', ['tzf', file]);
  return stdout.trim().split('\n');
}

describe.skipIf(!PACKS || !PREFIX)('an installed groupcast', () => {
  it('the tarballs carry the built code, the binaries and the web assets, and no sources', async () => {
    const packs = (await readdir(PACKS!)).sort();
    expect(packs).toEqual(['groupcast-client-0.1.0.tgz', 'groupcast-server-0.1.0.tgz', 'groupcast-shared-0.1.0.tgz']);
    const [client, server, shared] = await Promise.all(packs.map((file) => tarList(join(PACKS!, file))));
    for (const files of [client!, server!, shared!]) {
      expect(files).toContain('package/dist/index.js');
      expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
      expect(files.filter((f) => f.includes('tsbuildinfo'))).toEqual([]);
    }
    expect(server).toEqual(expect.arrayContaining(['package/bin/group-server.js', 'package/dist/cli.js', 'package/src/web/assets/index.html']));
    expect(client).toEqual(expect.arrayContaining(['package/bin/group-client.js', 'package/dist/cli.js']));
  });

  it('installs its binaries under the prefix, outside the checkout, each printing its version and help', async () => {
    const version = (JSON.parse(await readFile(join(ROOT, 'packages/shared/package.json'), 'utf8')) as { version: string }).version;
    for (const program of ['group-server', 'group-client']) {
      expect((await lstat(bin(program))).isSymbolicLink()).toBe(true);
      expect(await realpath(bin(program))).toMatch(new RegExp(`^${await realpath(PREFIX!)}/lib/node_modules/@groupcast/`));
      expect((await run(bin(program), ['--version'])).stdout.trim()).toBe(version);
      const help = await run(bin(program), ['--help']);
      expect(help.stdout).toContain(`${program} [command]`);
      expect(help.stdout).toMatch(/Exit codes/);
    }
  });

  it('delivers a file from the installed server to the installed member on 127.0.0.1, and both stop on SIGINT with exit 0', async () => {
    const port = String(testPort());
    const network = ['--interface', '127.0.0.1', '--port', port];
    const home = await h.dir('home');
    const env = { XDG_CONFIG_HOME: home, HOME: home };
    const serverState = await h.dir('server');
    const memberState = await h.dir('member');
    const downloads = await h.dir('downloads');
    const memberId = (await run(bin('group-client'), ['id', '--state-dir', memberState], { env: { ...process.env, ...env } })).stdout.trim();
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: [memberId] }] }));
    const metrics = String(testPort());
    const server = daemon('server', 'group-server', ['--config', config, '--state-dir', serverState, '--tcp-port', '0', '--metrics', `127.0.0.1:${metrics}`, ...network], env);
    const serverId = String((await server.waitForMsg('group-server started')).id);
    // The #! line's V8 option reaches node (env -S splits it): the young generation the daemons are measured with (bench/README.md).
    expect((await readFile(`/proc/${server.proc.pid}/cmdline`, 'utf8')).split('\0')).toContain('--max-semi-space-size=1');
    // The web view's page comes from the installed package's assets.
    const page = await fetch(`http://127.0.0.1:${metrics}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);

    const member = daemon('member', 'group-client', [
      '--join', 'Developers', '--server-id', serverId, '--state-dir', memberState, '--downloads', downloads, '--peer-port', '0', ...network,
    ], env);
    await server.waitForMsg('member online', { member: memberId });
    const content = randomBytes(256 * 1024);
    const file = join(serverState, 'hello.bin');
    await writeFile(file, content);
    const sent = await run(bin('group-server'), ['distribute', 'Developers', file, '--state-dir', serverState], { env: { ...process.env, ...env } });
    expect(sent.stdout).toMatch(/1 delivered/);
    await member.waitForMsg('received', { path: join(downloads, 'Developers', 'hello.bin') });
    const received = await readFile(join(downloads, 'Developers', 'hello.bin'));
    expect(createHash('sha256').update(received).digest('hex')).toBe(createHash('sha256').update(content).digest('hex'));

    for (const stopped of [member, server]) {
      stopped.proc.kill('SIGINT');
      expect(await stopped.exited).toBe(0);
      expect(stopped.logs.filter((l) => (l.level ?? 0) >= 40)).toEqual([]);
    }
  });
});
