import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clientConfigSchema, STARTER_CLIENT_CONFIG } from '../../packages/client/src/config.js';
import { loadConfigFile as loadServerConfig } from '../../packages/server/src/config-schema.js';
import { STARTER_CONFIG } from '../../packages/server/src/operator/starter-config.js';
import { parseConfigText } from '../../packages/shared/src/runtime/config-schema.js';
import { CLIENT_BIN, SERVER_BIN, harness, testPort } from '../support/daemons.js';

/**
 * Config files, precedence and the CLIs' handling of bad input: every mistake is exit 2 with a
 * message that names what is wrong (and for a config, the file and the field).
 */
const h = harness();
const network = ['--interface', '127.0.0.1', '--port', String(testPort()), '--tcp-port', '0'];

afterAll(() => h.cleanup());

/** The starter text with every commented-out `"key": value` setting switched on. */
function uncommented(text: string): string {
  return text.replace(/^(\s*)\/\/ ("[A-Za-z]+": .*)$/gm, '$1$2');
}

describe('starter configs (init)', () => {
  it('group-server init writes a commented config that the server starts from', async () => {
    const dir = await h.dir('init');
    const path = join(dir, 'etc', 'server.json');
    const first = await h.run(SERVER_BIN, ['init', '--config', path]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`wrote ${path}`);
    const text = await readFile(path, 'utf8');
    expect(text).toMatch(/^\/\/ group-server configuration/);

    const again = await h.run(SERVER_BIN, ['init', '--config', path]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already exists');
    expect((await h.run(SERVER_BIN, ['init', '--config', path, '--force'])).code).toBe(0);

    const server = h.spawn('server', SERVER_BIN, ['--config', path, '--state-dir', join(dir, 'state'), ...network]);
    const started = await server.waitForMsg('group-server started');
    expect(started.config).toBe(path);
    expect(started.groups).toEqual(['Developers', 'Designers']);
    await server.stop();
  });

  it('every setting the starters show commented out is valid when switched on, and every setting is shown', async () => {
    const server = uncommented(STARTER_CONFIG);
    expect(server).not.toBe(STARTER_CONFIG);
    const dir = await h.dir('starter');
    await writeFile(join(dir, 'server.json'), server);
    const parsed = await loadServerConfig(join(dir, 'server.json'));
    expect(Object.keys(parsed).sort()).toEqual(
      ['advertisePort', 'backlog', 'concurrency', 'groupAddress', 'groups', 'heartbeatTimeout', 'interface', 'keep', 'logFormat', 'logLevel', 'maxOpenMembers', 'metrics', 'name', 'openMemberExpiry', 'port', 'rate', 'stateDir', 'tcpPort', 'webToken'],
    );
    const client = parseConfigText('client.json', uncommented(STARTER_CLIENT_CONFIG), clientConfigSchema);
    expect(Object.keys(client).sort()).toEqual(Object.keys(clientConfigSchema.shape).sort());
  });

  it('the example configs in deploy/ are valid', async () => {
    const root = join(import.meta.dirname, '..', '..', 'deploy', 'config');
    expect((await loadServerConfig(join(root, 'server.json'))).stateDir).toBe('/var/lib/groupcast-server');
    const client = parseConfigText('client.json', await readFile(join(root, 'client.json'), 'utf8'), clientConfigSchema);
    expect(client.stateDir).toBe('/var/lib/groupcast-client');
  });

  it('group-client init writes a config the member accepts', async () => {
    const dir = await h.dir('client-init');
    const path = join(dir, 'client.json');
    const result = await h.run(CLIENT_BIN, ['init', '--config', path]);
    expect(result.code, result.stderr).toBe(0);
    const id = await h.run(CLIENT_BIN, ['id', '--config', path, '--state-dir', join(dir, 'state')]);
    expect(id.code, id.stderr).toBe(0);
  });
});

describe('config errors name the file and the field, exit 2', () => {
  it('server: a wrong value, an unknown key and a bad member id are all reported', async () => {
    const dir = await h.dir('bad');
    const path = join(dir, 'server.json');
    await writeFile(path, '{ "port": 99999, "colour": "blue", "groups": [{ "name": "Dev", "members": ["nope"] }] }');
    const result = await h.run(SERVER_BIN, ['--config', path, '--state-dir', join(dir, 'state'), ...network]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`config ${path}:`);
    expect(result.stderr).toMatch(/port: .*65535/);
    expect(result.stderr).toContain('colour: unknown setting');
    expect(result.stderr).toContain('groups[0].members[0]: ');
  });

  it('server: a syntax error gives the line and column', async () => {
    const dir = await h.dir('syntax');
    const path = join(dir, 'server.json');
    await writeFile(path, '{\n  // fine\n  "port": 47700\n  "tcpPort": 47701\n}\n');
    const result = await h.run(SERVER_BIN, ['status', '--config', path]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`config ${path} is not valid JSON (line 4, column 3)`);
  });

  it('server: a missing config file named with --config is an error, not a silent default', async () => {
    const result = await h.run(SERVER_BIN, ['status', '--config', '/nonexistent/groupcast.json']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('cannot read config /nonexistent/groupcast.json: no such file');
  });

  it('client: a wrong value is reported with the file and the field', async () => {
    const dir = await h.dir('bad-client');
    const path = join(dir, 'client.json');
    await writeFile(path, '{ "join": ["Developers"], "downloads": "relative/dir", "onReceiveJobs": 0 }');
    const result = await h.run(CLIENT_BIN, ['id', '--config', path, '--state-dir', join(dir, 'state')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`config ${path}:`);
    expect(result.stderr).toContain('downloads: must be an absolute path');
    expect(result.stderr).toContain('onReceiveJobs: ');
  });
});

describe('the member\'s config file, named', () => {
  it('a missing file named with --config is an error; GROUPCAST_CONFIG names the file read', async () => {
    const dir = await h.dir('client-named');
    const missing = await h.run(CLIENT_BIN, ['id', '--config', '/nonexistent/groupcast-client.json', '--state-dir', join(dir, 'state')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('cannot read config /nonexistent/groupcast-client.json: no such file');
    const path = join(dir, 'client.json');
    await writeFile(path, '{ "onReceiveJobs": 0 }');
    const named = await h.run(CLIENT_BIN, ['id', '--state-dir', join(dir, 'state')], 30_000, { GROUPCAST_CONFIG: path });
    expect(named.code).toBe(2);
    expect(named.stderr).toContain(`config ${path}: onReceiveJobs: `);
    const json = await h.run(CLIENT_BIN, ['status', '--json', '--config', path, '--state-dir', join(dir, 'state')]);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'GC_ERR_USAGE' } });
  });
});

describe('precedence: flag > environment > file > default', () => {
  it('the server takes each setting from the highest layer that sets it; the file is found in $XDG_CONFIG_HOME', async () => {
    const dir = await h.dir('layers');
    await mkdir(join(dir, 'xdg', 'groupcast'), { recursive: true });
    const path = join(dir, 'xdg', 'groupcast', 'server.json');
    await writeFile(path, JSON.stringify({ name: 'from-file', concurrency: 3, keep: '2h' }));
    const env = { XDG_CONFIG_HOME: join(dir, 'xdg') };
    const nameWith = async (layers: { env?: Record<string, string>; flags?: string[] }): Promise<Record<string, unknown>> => {
      const state = join(dir, `state-${Math.random().toString(36).slice(2)}`);
      const server = h.spawn('server', SERVER_BIN, ['--state-dir', state, ...network, ...(layers.flags ?? [])], { ...env, ...layers.env });
      await server.waitForMsg('group-server started');
      const status = await h.run(SERVER_BIN, ['status', '--json', '--state-dir', state], 30_000, env);
      await server.stop();
      expect(status.code, status.stderr).toBe(0);
      return (JSON.parse(status.stdout) as { server: Record<string, unknown> }).server;
    };
    expect(await nameWith({})).toMatchObject({ name: 'from-file', configFile: path });
    expect(await nameWith({ env: { GROUPCAST_NAME: 'from-env' } })).toMatchObject({ name: 'from-env' });
    expect(await nameWith({ env: { GROUPCAST_NAME: 'from-env' }, flags: ['--name', 'from-flag'] })).toMatchObject({ name: 'from-flag' });
  });

  it('the member takes each setting from the highest layer that sets it; the file is found in $XDG_CONFIG_HOME', async () => {
    const dir = await h.dir('client-layers');
    await mkdir(join(dir, 'xdg', 'groupcast'), { recursive: true });
    await writeFile(join(dir, 'xdg', 'groupcast', 'client.json'), JSON.stringify({ name: 'from-file', join: ['Developers'], trustFirstServer: true }));
    const env = { XDG_CONFIG_HOME: join(dir, 'xdg') };
    const settingsWith = async (layers: { env?: Record<string, string>; flags?: string[] }): Promise<{ name: string; groups: Array<{ name: string }> }> => {
      const state = join(dir, `state-${Math.random().toString(36).slice(2)}`);
      const client = h.spawn('client', CLIENT_BIN, [
        '--state-dir', state, '--downloads', join(dir, 'downloads'), '--interface', '127.0.0.1', '--port', String(testPort()), '--peer-port', '0', ...(layers.flags ?? []),
      ], { ...env, ...layers.env });
      await client.waitForMsg('group-client running');
      const status = await h.run(CLIENT_BIN, ['status', '--json', '--state-dir', state], 30_000, env);
      await client.stop();
      expect(status.code, status.stderr).toBe(0);
      return (JSON.parse(status.stdout) as { status: { name: string; groups: Array<{ name: string }> } }).status;
    };
    const fromFile = await settingsWith({});
    expect(fromFile.name).toBe('from-file');
    expect(fromFile.groups.map((g) => g.name)).toEqual(['Developers']);
    expect((await settingsWith({ env: { GROUPCAST_NAME: 'from-env' } })).name).toBe('from-env');
    expect((await settingsWith({ env: { GROUPCAST_NAME: 'from-env' }, flags: ['--name', 'from-flag'] })).name).toBe('from-flag');
  });
});

describe('bad flags: exit 2 with a clear message; --help has examples', () => {
  const cases: Array<[string, string, string[], RegExp]> = [
    ['server', SERVER_BIN, ['--bogus'], /Unknown argument: bogus/],
    ['server', SERVER_BIN, ['distribute'], /Not enough non-option arguments/],
    ['server', SERVER_BIN, ['--port', 'abc'], /--port must be an integer 1\.\.65535, not/],
    ['server', SERVER_BIN, ['--heartbeat-timeout', '1s'], /heartbeat timeout must be 3\.0s … 15\.0s, got "1s"/],
    ['server', SERVER_BIN, ['status', '--metrics', 'nowhere:x'], /--metrics: "nowhere:x" is not PORT, ADDR or ADDR:PORT/],
    ['server', SERVER_BIN, ['distribute', 'Developers', '/nonexistent/file'], /\/nonexistent\/file: no such file/],
    ['server', SERVER_BIN, ['members', 'allow'], /members allow needs <group> <id>/],
    ['client', CLIENT_BIN, ['--bogus'], /Unknown argument: bogus/],
    ['client', CLIENT_BIN, ['--port', '0'], /--port must be an integer 1\.\.65535/],
    ['client', CLIENT_BIN, ['--on-receive-jobs', '0', 'id'], /--on-receive-jobs must be an integer 1\.\.64/],
    ['client', CLIENT_BIN, ['status', '--recent', 'x'], /--recent must be an integer/],
  ];
  it.each(cases.map(([who, bin, args, message]) => [`group-${who} ${args.join(' ')}`, bin, args, message] as const))('%s', async (_title, bin, args, message) => {
    const result = await h.run(bin, args);
    expect(result.code, result.stdout + result.stderr).toBe(2);
    expect(result.stderr).toMatch(message);
  });

  it.each([['group-server', SERVER_BIN], ['group-client', CLIENT_BIN]])('%s --help', async (name, bin) => {
    const result = await h.run(bin, ['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`${name} [command] [options]`);
    expect(result.stdout).toContain('Examples:');
    expect(result.stdout.replace(/\s+/g, ' ')).toContain('a flag beats the environment, which beats the file, which beats the default');
  });
});
