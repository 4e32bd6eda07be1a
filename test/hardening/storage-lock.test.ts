import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, SERVER_BIN, harness, testPort, type Daemon } from '../support/daemons.js';

/**
 * One daemon per state directory. A second one on the same directory refuses to start, naming the
 * pid of the one running, which stays reachable (before: the second replaced control.sock and
 * status.json, and deleted the socket when it exited, leaving the first unreachable). A daemon killed
 * with -9 leaves a stale lock that does not keep the next start from starting.
 */
const h = harness();
const port = String(testPort());

afterAll(() => h.cleanup());

interface Role {
  name: string;
  bin: string;
  args: (state: string) => Promise<string[]>;
  startedMsg: string;
  /** The pid the running daemon reports through its state directory (control socket / status file). */
  reportedPid: (state: string) => Promise<number>;
}

const server: Role = {
  name: 'group-server',
  bin: SERVER_BIN,
  args: async (state) => {
    const config = join(await h.dir('config'), 'server.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: [] }] }));
    return ['--config', config, '--interface', '127.0.0.1', '--port', port, '--tcp-port', '0', '--state-dir', state];
  },
  startedMsg: 'group-server started',
  reportedPid: async (state) => {
    const { code, stdout, stderr } = await h.run(SERVER_BIN, ['status', '--json', '--state-dir', state]);
    expect(code, stderr).toBe(0);
    return (JSON.parse(stdout) as { server: { pid: number } }).server.pid;
  },
};

const client: Role = {
  name: 'group-client',
  bin: CLIENT_BIN,
  args: async (state) => ['--downloads', await h.dir('downloads'), '--interface', '127.0.0.1', '--port', port, '--state-dir', state],
  startedMsg: 'control plane open',
  reportedPid: async (state) => {
    const { code, stdout, stderr } = await h.run(CLIENT_BIN, ['status', '--json', '--state-dir', state]);
    expect(code, `group-client status: ${stdout}${stderr}`).toBe(0);
    return (JSON.parse(stdout) as { status: { pid: number } }).status.pid;
  },
};

async function start(role: Role, label: string, args: string[]): Promise<Daemon> {
  const daemon = h.spawn(label, role.bin, args);
  await daemon.waitForMsg(role.startedMsg, {}, 30_000);
  return daemon;
}

async function oneDaemonPerStateDir(role: Role): Promise<void> {
  const state = await h.dir(`${role.name}-state`);
  const args = await role.args(state);
  const first = await start(role, `${role.name}#1`, args);

  const second = h.spawn(`${role.name}#2`, role.bin, args);
  const started = await second.waitForMsg(role.startedMsg, {}, 30_000).then(() => true, () => false);
  expect(started, 'the second daemon started').toBe(false);
  expect(await second.exited).not.toBe(0);
  const said = second.logs.map((line) => String(line.msg)).join('\n');
  expect(said).toContain(`state directory ${state} is in use by another ${role.name} (pid ${first.proc.pid})`);
  expect(await role.reportedPid(state)).toBe(first.proc.pid);

  await first.stop('SIGKILL');
  const third = await start(role, `${role.name}#3`, args);
  expect(await role.reportedPid(state)).toBe(third.proc.pid);
  await third.stop('SIGTERM');
}

describe('a state directory in use', () => {
  it('server: a second daemon refuses to start, naming the first, which stays reachable; after a kill -9 it starts', async () => {
    await oneDaemonPerStateDir(server);
  });

  it('client: a second daemon refuses to start, naming the first, which stays reachable; after a kill -9 it starts', async () => {
    await oneDaemonPerStateDir(client);
  });
});
