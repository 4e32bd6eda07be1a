import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_GROUP_ADDRESS, deriveInviteKey, INVITE_PROOF_LENGTH, joinProof, luhn32, NakReason, newJoinCode, parseJoinCode,
  type PeerId,
} from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, testPort, type Daemon } from '../support/daemons.js';
import { craft, filesUnder, identityIn, nonceOf, serverStatus, Udp } from './tools.js';

/**
 * Join codes against a real server on its built-in (closed) groups: a code enrolls a member and pins
 * the server without ever crossing the network; a used, an expired or a guessed code gets nothing;
 * guessing is rate-limited; and a rogue server that matches a code's id prefix cannot become the pin.
 */
const h = harness();
const port = testPort();
const network = ['--interface', '127.0.0.1', '--port', String(port)];

let serverState: string;
let server: Daemon;
let serverId: string;
let home: string;

interface Invite { code: string; expiresAt: number; server: string }

async function invite(group: string, ...flags: string[]): Promise<Invite> {
  const result = await h.run(SERVER_BIN, ['invite', group, ...flags, '--state-dir', serverState, '--json']);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as Invite;
}

/** A member daemon with a fresh state dir, joining with a code and nothing pinned. */
async function member(name: string, code: string, extra: string[] = [], net = network): Promise<{ daemon: Daemon; state: string; downloads: string }> {
  const state = await h.dir(`${name}-state`);
  const downloads = await h.dir(`${name}-dl`);
  const daemon = h.spawn(name, CLIENT_BIN, ['--join', 'Developers', '--code', code, '--state-dir', state, '--downloads', downloads, '--name', name, ...extra, ...net], { XDG_CONFIG_HOME: home });
  return { daemon, state, downloads };
}

/** Every JOIN datagram on the group, as an eavesdropper on the LAN sees them. */
async function eavesdrop(): Promise<{ socket: Socket; seen: Buffer[] }> {
  const socket = createSocket({ type: 'udp4', reuseAddr: true });
  const seen: Buffer[] = [];
  socket.on('message', (buf) => seen.push(buf));
  await new Promise<void>((resolve) => socket.bind(port, resolve));
  socket.addMembership(DEFAULT_GROUP_ADDRESS, '127.0.0.1');
  return { socket, seen };
}

const spellings = (code: string): string[] => {
  const compact = code.replace(/-/g, '');
  return [code, compact, compact.slice(4, 14)];
};

afterAll(() => h.cleanup());

describe('join codes', () => {
  beforeAll(async () => {
    home = await h.dir('home');
    serverState = await h.dir('server');
    server = h.spawn('server', SERVER_BIN, ['--state-dir', serverState, '--tcp-port', '0', ...network], { XDG_CONFIG_HOME: home });
    serverId = String((await server.waitForMsg('group-server started')).id);
  });

  it('on the built-in groups, the server says they are closed and how to invite', async () => {
    const hint = await server.waitForLog((l) => typeof l.invite === 'string');
    expect(hint.invite).toMatch(/^group-server invite <group>/);
    expect(hint.msg).toMatch(/closed/);
  });

  it('a code enrolls the member and pins the server, and the code itself never crosses the network or reaches a log', async () => {
    const wire = await eavesdrop();
    const { code, server: issuer } = await invite('Developers');
    expect(issuer).toBe(serverId);
    expect(parseJoinCode(code).serverPrefix).toBe(serverId.slice(0, 4));

    const alice = await member('alice', code);
    await alice.daemon.waitForLog((l) => l.msg === 'pinned the server that issued the join code' && l.server === serverId);
    await alice.daemon.waitForMsg('connected');
    const aliceId = String((await alice.daemon.waitForMsg('group-client running')).id);
    await server.waitForMsg('join code redeemed', { member: aliceId, group: 'Developers' });
    const pin = JSON.parse(await readFile(join(alice.state, 'server.json'), 'utf8')) as { serverId: string; how: string };
    expect(pin).toMatchObject({ serverId, how: 'join-code' });

    const file = join(serverState, 'welcome.txt');
    await writeFile(file, 'hello, new member');
    const sent = await h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', serverState]);
    expect(sent.code, sent.stdout + sent.stderr).toBe(0);
    expect(await filesUnder(alice.downloads)).toEqual(['Developers/welcome.txt']);

    wire.socket.close();
    const joins = wire.seen.filter((buf) => buf[3] === 4);
    expect(joins.length).toBeGreaterThan(0);
    const stored = await readFile(join(serverState, 'invites.json'), 'utf8');
    expect((await stat(join(serverState, 'invites.json'))).mode & 0o777).toBe(0o600);
    for (const spelling of spellings(code)) {
      for (const buf of wire.seen) expect(buf.includes(Buffer.from(spelling))).toBe(false);
      expect(JSON.stringify(server.logs)).not.toContain(spelling);
      expect(JSON.stringify(alice.daemon.logs)).not.toContain(spelling);
      expect(stored).not.toContain(spelling);
    }
  });

  it('a used code gets nothing, and a member revoked since cannot use its code to come back', async () => {
    const { code } = await invite('Developers');
    const first = await member('first', code);
    await first.daemon.waitForMsg('joined', { group: 'Developers' });
    const firstId = String((await first.daemon.waitForMsg('group-client running')).id) as PeerId;

    const second = await member('second', code);
    const refused = await second.daemon.waitForMsg('join refused', { group: 'Developers' });
    expect(refused).toMatchObject({ reason: 'bad join code', message: 'join code already used' });
    await expect(stat(join(second.state, 'server.json'))).rejects.toThrow(/ENOENT/);

    const revoked = await h.run(SERVER_BIN, ['members', 'revoke', 'Developers', firstId, '--state-dir', serverState]);
    expect(revoked.code, revoked.stderr).toBe(0);
    await first.daemon.stop();
    const again = h.spawn('first-again', CLIENT_BIN, ['--join', 'Developers', '--code', code, '--state-dir', first.state, '--downloads', first.downloads, ...network], { XDG_CONFIG_HOME: home });
    expect(await again.waitForMsg('join refused', { group: 'Developers' })).toMatchObject({ reason: 'not authorized' });

    const members = (await serverStatus(serverState)).members;
    const secondId = String((await second.daemon.waitForMsg('group-client running')).id);
    expect(members.find((m) => m.id === secondId)?.allowedIn ?? []).toEqual([]);
    expect(members.find((m) => m.id === firstId)?.allowedIn ?? []).toEqual([]);
  });

  it('an expired code gets nothing', async () => {
    const { code, expiresAt } = await invite('Developers', '--ttl', '200ms');
    while (Date.now() <= expiresAt) await delay(expiresAt - Date.now() + 1);
    const late = await member('late', code);
    expect(await late.daemon.waitForMsg('join refused', { group: 'Developers' })).toMatchObject({
      reason: 'bad join code', message: 'join code expired',
    });
    expect(late.daemon.logs.some((l) => l.msg === 'connected')).toBe(false);
  });

  it('guessing codes is rate-limited per address and id, and a limited source cannot even test a right code', async () => {
    const attacker = (await identityIn(await h.dir('guesser'), 'guesser')).signer;
    const other = (await identityIn(await h.dir('guesser-2'), 'guesser-2')).signer;
    const udp = await Udp.open();
    try {
      const guess = async (signer = attacker, proof: Buffer = randomBytes(INVITE_PROOF_LENGTH)): Promise<NakReason | 'ack'> => {
        const datagram = craft({ type: 'join', group: 'Developers', proof }, signer);
        await udp.send(datagram, DEFAULT_GROUP_ADDRESS, port);
        const answer = (await udp.answerTo(nonceOf(datagram))).datagram.message;
        return answer.type === 'nak' ? answer.reason : 'ack';
      };
      const answers: Array<NakReason | 'ack'> = [];
      for (let i = 0; i < 6; i++) answers.push(await guess());
      expect(answers).toEqual([...Array(5).fill(NakReason.BAD_CODE), NakReason.RATE_LIMITED]);
      // Another id from the same address is limited too: ids cost nothing to make.
      expect(await guess(other)).toBe(NakReason.RATE_LIMITED);

      // The right code, proven correctly, from the limited source: not checked, so it reveals nothing and is not spent.
      const { code } = await invite('Developers');
      const right = joinProof(await deriveInviteKey(parseJoinCode(code)), other.publicKey, 'Developers');
      expect(await guess(other, right)).toBe(NakReason.RATE_LIMITED);
      const status = (await serverStatus(serverState)) as unknown as { server: { invites: Record<string, number> } };
      expect(status.server.invites.rateLimited).toBeGreaterThanOrEqual(2);
      expect((await serverStatus(serverState)).members.some((m) => m.id === other.id && m.allowedIn.length > 0)).toBe(false);
    } finally {
      udp.close();
    }
  });
});

describe('join codes and a rogue server', () => {
  const roguePort = testPort();
  const rogueNetwork = ['--interface', '127.0.0.1', '--port', String(roguePort)];

  it('a server whose id matches the code but did not issue it gets no pin and no connection', async () => {
    const victimState = await h.dir('victim-state');
    const victimId = (await identityIn(victimState, 'victim')).signer.id;
    const rogueState = await h.dir('rogue');
    const rogueId = (await identityIn(rogueState, 'group-server')).signer.id;
    // The rogue ACKs the victim (it lists its id) but cannot prove the code: it has no such invite.
    const config = join(rogueState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: [victimId] }] }));
    const rogue = h.spawn('rogue', SERVER_BIN, ['--config', config, '--state-dir', rogueState, '--tcp-port', '0', ...rogueNetwork], { XDG_CONFIG_HOME: home });
    await rogue.waitForMsg('group-server started');
    const body = rogueId.slice(0, 4) + newJoinCode(rogueId).secret;
    const code = parseJoinCode(body + luhn32(body)).text;

    const downloads = await h.dir('victim-dl');
    const victim = h.spawn('victim', CLIENT_BIN, ['--join', 'Developers', '--code', code, '--state-dir', victimState, '--downloads', downloads, ...rogueNetwork], { XDG_CONFIG_HOME: home });
    await victim.waitForLog((l) => l.msg === 'ignoring an ACK without proof that this server issued the join code' && l.server === rogueId);
    await rogue.waitForLog((l) => l.msg === 'member joined' && l.member === victimId);

    await expect(stat(join(victimState, 'server.json'))).rejects.toThrow(/ENOENT/);
    expect(victim.logs.some((l) => l.msg === 'connected' || l.msg === 'joined')).toBe(false);
    expect((await serverStatus(rogueState)).server.connections.admitted).toBe(0);
    await rogue.stop();
  });
});
