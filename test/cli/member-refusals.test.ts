import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { luhn32, newJoinCode, parseJoinCode, parsePeerId, type PeerId } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort, type Daemon } from '../support/daemons.js';

/**
 * A member the server refuses says so: `group-client status` (table and --json) shows each refused
 * group with its reason and time, the refusal is logged once however often it is repeated, and a
 * member with nothing left to serve exits 77 with the reason in its last log line. Real processes on
 * loopback: a server with closed groups, members revoked, with wrong, used or expired codes, or
 * asking for a group that does not exist; and a second server whose open group takes one guest.
 */
const EXIT_REFUSED = 77;
const h = harness();
const port = testPort();
const network = ['--interface', '127.0.0.1', '--port', String(port)];

let serverState: string;
let serverId: PeerId;
let server: Daemon;
const ids: Record<'solo' | 'duo', string> = { solo: '', duo: '' };
const states: Record<string, string> = {};

interface GroupRow { name: string; state: string; reason: string; since: number; refusal: { reason: string; message: string; at: number } | null }
interface Report { running: boolean; status: { groups: GroupRow[]; stopReason: string | null; server: unknown } }

const serverCli = (...args: string[]) => h.run(SERVER_BIN, [...args, '--state-dir', serverState]);

async function stateDir(name: string): Promise<string> {
  states[name] ??= await h.dir(`${name}-state`);
  return states[name];
}

/** A member daemon at debug level (repeats of a refusal show there), joining `groups`. */
async function member(name: string, groups: string[], extra: string[], env: Record<string, string> = {}, net = network): Promise<Daemon> {
  const downloads = await h.dir(`${name}-dl`);
  return h.spawn(name, CLIENT_BIN, [
    ...groups.flatMap((g) => ['--join', g]), '--state-dir', await stateDir(name), '--downloads', downloads, '--name', name,
    '--no-peers', '--log-level', 'debug', ...extra, ...net,
  ], env);
}

async function status(name: string): Promise<{ code: number | null; report: Report; text: string }> {
  const json = await h.run(CLIENT_BIN, ['status', '--json', '--state-dir', await stateDir(name)]);
  const text = await h.run(CLIENT_BIN, ['status', '--state-dir', await stateDir(name)]);
  return { code: json.code, report: JSON.parse(json.stdout) as Report, text: text.stdout };
}

const refusals = (daemon: Daemon, group: string): number => daemon.logs.filter((l) => l.msg === 'join refused' && l.group === group).length;

/** Waits for the member to exit by itself, and checks that it exited 77 saying why, last. */
async function expectRefusedExit(daemon: Daemon, why: RegExp): Promise<void> {
  const exited = await Promise.race([daemon.exited, delay(30_000).then(() => 'still running')]);
  expect(exited, daemon.tail()).toBe(EXIT_REFUSED);
  const last = daemon.logs.at(-1);
  expect(last?.level).toBe(60);
  expect(String(last?.msg)).toMatch(why);
}

beforeAll(async () => {
  serverState = await h.dir('server');
  for (const name of ['solo', 'duo'] as const) ids[name] = await idOf(h, CLIENT_BIN, await stateDir(name));
  const config = join(serverState, 'config.json');
  await writeFile(config, JSON.stringify({
    groups: [{ name: 'Developers', members: [ids.solo, ids.duo] }, { name: 'Designers', members: [ids.duo] }],
  }));
  server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', ...network]);
  serverId = parsePeerId(String((await server.waitForMsg('group-server started')).id));
});

afterAll(() => h.cleanup());

describe('a revoked member', () => {
  it('with no other group: status says revoked, the log says it once, and the daemon exits 77 with the reason last', async () => {
    const solo = await member('solo', ['Developers'], ['--server-id', serverId]);
    await server.waitForMsg('member online', { member: ids.solo });
    expect(refusals(solo, 'Developers')).toBe(0);

    const revoked = await serverCli('members', 'revoke', 'Developers', ids.solo);
    expect(revoked.code, revoked.stderr).toBe(0);
    await expectRefusedExit(solo, /Developers: revoked \(not authorized for "Developers"\)/);
    expect(refusals(solo, 'Developers')).toBe(1);
    expect(solo.logs.find((l) => l.msg === 'join refused')).toMatchObject({ reason: 'not authorized', revoked: true });

    const { code, report, text } = await status('solo');
    expect(code).toBe(3);
    expect(report.status.groups).toEqual([expect.objectContaining({
      name: 'Developers', state: 'revoked', refusal: expect.objectContaining({ reason: 'not authorized', message: 'not authorized for "Developers"' }),
    })]);
    expect(report.status.groups[0]?.refusal?.at).toBeGreaterThan(0);
    expect(report.status.stopReason).toMatch(/refused/);
    expect(text).toMatch(/Developers\s+revoked\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+not authorized: not authorized for "Developers"/);
    expect(text).toMatch(/stopped\s+every group was refused/);
  });

  it('in one of two groups: status shows it beside the joined one, rechecks log nothing new, and a re-allow brings it back', async () => {
    // Rechecks every 500 ms here (5 min by default): the repeated refusals are seen at debug level.
    const duo = await member('duo', ['Developers', 'Designers'], ['--server-id', serverId], { GC_MEMBERSHIP_RECHECK_MS: '500' });
    await server.waitForMsg('member online', { member: ids.duo });
    await duo.waitForMsg('joined', { group: 'Designers' });

    const revoked = await serverCli('members', 'revoke', 'Developers', ids.duo);
    expect(revoked.code, revoked.stderr).toBe(0);
    await duo.waitForMsg('join refused', { group: 'Developers' });
    const stillRefused = (): number => duo.logs.filter((l) => l.msg === 'join still refused' && l.group === 'Developers').length;
    await duo.waitForLog(() => stillRefused() >= 3, 30_000, 'three rechecks of the revoked group');
    expect(refusals(duo, 'Developers')).toBe(1);
    expect(duo.proc.exitCode).toBeNull();

    const before = await status('duo');
    expect(before.code).toBe(0);
    expect(before.report.status.groups.map((g) => [g.name, g.state, g.refusal?.reason ?? null])).toEqual([
      ['Developers', 'revoked', 'not authorized'], ['Designers', 'joined', null],
    ]);

    // Counted before the allow: the next recheck (every 500 ms) may rejoin before the CLI returns.
    const joinedAgain = duo.logs.filter((l) => l.msg === 'joined' && l.group === 'Developers').length + 1;
    const allowed = await serverCli('members', 'allow', 'Developers', ids.duo);
    expect(allowed.code, allowed.stderr).toBe(0);
    await duo.waitForLog(() => duo.logs.filter((l) => l.msg === 'joined' && l.group === 'Developers').length >= joinedAgain, 30_000, 'Developers joined again');
    await expect.poll(async () => (await status('duo')).report.status.groups.map((g) => g.state), { timeout: 10_000 }).toEqual(['joined', 'joined']);
    await duo.stop('SIGINT');
  });
});

describe('a member refused at its first join', () => {
  async function code(...flags: string[]): Promise<{ code: string; expiresAt: number }> {
    const result = await serverCli('invite', 'Developers', ...flags, '--json');
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as { code: string; expiresAt: number };
  }

  async function expectRefused(name: string, daemon: Daemon, group: string, reason: string, message: string): Promise<void> {
    await expectRefusedExit(daemon, new RegExp(`${group}: ${reason} \\(${message.replace(/[()"]/g, '.')}\\)`));
    expect(refusals(daemon, group)).toBe(1);
    await expectShown(name, group, reason, message, 3);
  }

  /**
   * A wrong join code: nothing is pinned, and no server can prove it issued a code it never issued (any
   * server matching its id prefix could say so), so the member shows the refusal but keeps asking. A used
   * or expired code's refusal carries the issuer's proof, and ends the join for good (expectRefused).
   */
  async function expectRefusedStillAsking(name: string, daemon: Daemon, group: string, reason: string, message: string): Promise<void> {
    const refused = await daemon.waitForMsg('join refused', { group, reason, message, unproven: true });
    const after = daemon.logs.indexOf(refused);
    await daemon.waitForLog((l) => l.msg === 'join sent' && daemon.logs.indexOf(l) > after, 30_000, 'a JOIN after the refusal');
    expect(refusals(daemon, group)).toBe(1);
    await expectShown(name, group, reason, message, 0);
    await daemon.stop('SIGINT');
  }

  async function expectShown(name: string, group: string, reason: string, message: string, exitCode: number): Promise<void> {
    const { code: exit, report, text } = await status(name);
    expect(exit).toBe(exitCode);
    expect(report.status.groups).toEqual([expect.objectContaining({ name: group, state: 'refused', reason: message, refusal: expect.objectContaining({ reason, message }) })]);
    expect(text).toContain(`${reason}: ${message}`);
    expect(text).not.toContain('not found yet');
  }

  it('a wrong code', async () => {
    const body = serverId.slice(0, 4) + newJoinCode(serverId).secret;
    const wrong = parseJoinCode(body + luhn32(body)).text;
    const daemon = await member('wrong', ['Developers'], ['--code', wrong]);
    await expectRefusedStillAsking('wrong', daemon, 'Developers', 'bad join code', 'wrong join code');
  });

  it('a used code', async () => {
    const { code: used } = await code();
    const first = await member('first', ['Developers'], ['--code', used]);
    await first.waitForMsg('joined', { group: 'Developers' });
    const second = await member('second', ['Developers'], ['--code', used]);
    await expectRefused('second', second, 'Developers', 'bad join code', 'join code already used');
    await first.stop('SIGINT');
  });

  it('an expired code', async () => {
    const { code: expired, expiresAt } = await code('--ttl', '200ms');
    while (Date.now() <= expiresAt) await delay(expiresAt - Date.now() + 1);
    const daemon = await member('late', ['Developers'], ['--code', expired]);
    await expectRefused('late', daemon, 'Developers', 'bad join code', 'join code expired');
  });

  it('an unknown group', async () => {
    const daemon = await member('lost', ['Nonexistent'], ['--server-id', serverId]);
    await expectRefused('lost', daemon, 'Nonexistent', 'unknown group', 'no group named "Nonexistent"');
  });

  it('a full open group', async () => {
    const lobbyNetwork = ['--interface', '127.0.0.1', '--port', String(testPort())];
    const lobbyState = await h.dir('lobby-server');
    const config = join(lobbyState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Lobby', open: true }] }));
    const lobby = h.spawn('lobby', SERVER_BIN, ['--config', config, '--state-dir', lobbyState, '--tcp-port', '0', '--max-open-members', '1', ...lobbyNetwork]);
    const lobbyId = String((await lobby.waitForMsg('group-server started')).id);
    const guest = await member('guest', ['Lobby'], ['--server-id', lobbyId], {}, lobbyNetwork);
    await guest.waitForMsg('joined', { group: 'Lobby' });
    const late = await member('late-guest', ['Lobby'], ['--server-id', lobbyId], {}, lobbyNetwork);
    await expectRefused('late-guest', late, 'Lobby', 'group full', 'open group "Lobby" is full (1 members)');
    await guest.stop('SIGINT');
    await lobby.stop('SIGINT');
  });
});
