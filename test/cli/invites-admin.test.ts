import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, SERVER_BIN, harness, testPort, type Daemon } from '../support/daemons.js';

/**
 * `group-server invites [list|cancel]` against a real server and real members: the list shows what an
 * invite is (group, state, uses left, expiry) but never its code; a cancelled code is refused to a
 * member that presents it, and another invite of the same group still enrolls.
 */
const h = harness();
const network = ['--interface', '127.0.0.1', '--port', String(testPort())];

interface Created { code: string; invite: string; group: string }
interface Listed { invite: string; group: string; state: string; uses: number; usesLeft: number; createdAt: number; expiresAt: number }

let serverState: string;
let server: Daemon;
let home: string;

const serverCli = (...args: string[]) => h.run(SERVER_BIN, [...args, '--state-dir', serverState]);

async function invite(group: string): Promise<Created> {
  const result = await serverCli('invite', group, '--json');
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as Created;
}

async function member(name: string, code: string): Promise<Daemon> {
  const state = await h.dir(`${name}-state`);
  const downloads = await h.dir(`${name}-dl`);
  return h.spawn(name, CLIENT_BIN, ['--join', 'Developers', '--code', code, '--state-dir', state, '--downloads', downloads, '--name', name, ...network], { XDG_CONFIG_HOME: home });
}

/** The code's characters after the 4 that name the server: what must never be shown again. */
const secretOf = (code: string): string => code.replace(/-/g, '').slice(4);

afterAll(() => h.cleanup());

describe('invites list and cancel', () => {
  let first: Created;
  let second: Created;

  beforeAll(async () => {
    home = await h.dir('home');
    serverState = await h.dir('server');
    server = h.spawn('server', SERVER_BIN, ['--state-dir', serverState, '--tcp-port', '0', ...network], { XDG_CONFIG_HOME: home });
    await server.waitForMsg('group-server started');
    first = await invite('Developers');
    second = await invite('Developers');
  });

  it('invite prints a separate invite id beside the code', async () => {
    const result = await serverCli('invite', 'Designers');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/join code for Designers: \S+ {3}\(invite [0-9a-f]{8}: "group-server invites cancel [0-9a-f]{8}" withdraws it\)/);
    expect(first.invite).toMatch(/^[0-9a-f]{8}$/);
    expect(first.code).not.toContain(first.invite);
  });

  it('lists both invites as a table and as JSON, never with their codes', async () => {
    const table = await serverCli('invites');
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^INVITE +GROUP +STATE +USES LEFT +EXPIRES +CREATED/);
    for (const created of [first, second]) {
      expect(table.stdout).toMatch(new RegExp(`^${created.invite} +Developers +active +1 of 1 +\\d{4}-\\d\\d-\\d\\dT`, 'm'));
    }
    const json = await serverCli('invites', 'list', '--json');
    expect(json.code, json.stderr).toBe(0);
    const listed = JSON.parse(json.stdout) as Listed[];
    expect(listed.map((i) => i.invite)).toEqual(expect.arrayContaining([first.invite, second.invite]));
    expect(Object.keys(listed[0] ?? {}).sort()).toEqual(['cancelledAt', 'createdAt', 'expiresAt', 'group', 'invite', 'state', 'uses', 'usesLeft']);
    for (const out of [table.stdout, json.stdout]) {
      for (const created of [first, second]) expect(out).not.toContain(secretOf(created.code).slice(0, 6));
    }
  });

  it('a cancelled code is refused to a real member; the other invite still enrolls', async () => {
    const cancelled = await serverCli('invites', 'cancel', first.invite.slice(0, 4));
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(cancelled.stdout).toContain(`cancelled invite ${first.invite} for Developers`);

    const late = await member('late', first.code);
    expect(await late.waitForMsg('join refused', { group: 'Developers' }, 30_000)).toMatchObject({ reason: 'bad join code', message: 'join code cancelled' });
    await server.waitForMsg('join code cancelled', { invite: first.invite });

    const welcome = await member('welcome', second.code);
    await welcome.waitForMsg('joined', { group: 'Developers' }, 30_000);

    const listed = JSON.parse((await serverCli('invites', '--json')).stdout) as Listed[];
    expect(listed.find((i) => i.invite === first.invite)).toMatchObject({ state: 'cancelled', usesLeft: 1 });
    expect(listed.find((i) => i.invite === second.invite)).toMatchObject({ state: 'used', usesLeft: 0 });
  });

  it('refuses a prefix that is too short or matches nothing, clearly', async () => {
    const short = await serverCli('invites', 'cancel', 'ab', '--json');
    expect(short.code).toBe(2);
    expect(JSON.parse(short.stdout)).toMatchObject({ error: { code: 'GC_ERR_USAGE', message: expect.stringMatching(/at least 4/) } });
    const none = await serverCli('invites', 'cancel', second.invite.replace(/^./, (c) => (c === '0' ? '1' : '0')));
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no invite with an id starting with/);
  });
});
