import { spawn } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_GROUP_ADDRESS, NakReason, type Identity } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, installForUser, testPort, type Daemon } from '../support/daemons.js';
import {
  craft, filesUnder, forgedSigner, identityIn, nonceOf, serverStatus, tlsAttempt, Udp, until,
} from './tools.js';

/**
 * Attacks on who gets in, against a real server on loopback. The closed group Developers allows
 * alice, bob and dave. alice runs as a real member; so does mallory, whom nobody allowed. The test
 * holds the keys of dave and of an attacker, and sends datagrams by hand.
 */
const h = harness();
const port = testPort();
const network = ['--interface', '127.0.0.1', '--port', String(port)];

type Name = 'alice' | 'mallory' | 'bob' | 'dave' | 'attacker';
const ids = {} as Record<Name, Identity>;
const stateDirs = {} as Record<Name, string>;
const downloads = {} as Record<'alice' | 'mallory', string>;
const members = {} as Record<'alice' | 'mallory', Daemon>;
let serverState: string;
let server: Daemon;
let serverId: string;
let tcpPort: number;
let udp: Udp;

const refusals = (member: string | undefined): number =>
  server.logs.filter((l) => l.msg === 'refused connection from unauthorized id' && l.member === member).length;

async function dropped(reason: string): Promise<number> {
  return (await serverStatus(serverState)).server.datagrams.dropped[reason] ?? 0;
}

/** Waits until the server has counted one more drop for `reason` than `before`. */
function droppedOnce(reason: string, before: number): Promise<number> {
  return until(async () => {
    const now = await dropped(reason);
    return now > before ? now : undefined;
  }, `a ${reason} drop`);
}

async function memberRecord(id: string): Promise<{ joined: string[]; allowedIn: string[] } | undefined> {
  return (await serverStatus(serverState)).members.find((m) => m.id === id);
}

const NOBODY = { uid: 65534, gid: 65534 };

/** Runs a group-server command as the unprivileged user `nobody`, from a copy that user can read. */
function runAsNobody(serverBin: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [serverBin, ...args], {
      ...NOBODY,
      // HOME must be one nobody may look in, or the config search (not the socket) would fail.
      env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    // 'close': after stderr is read, which 'exit' may come before.
    proc.once('close', (code) => resolve({ code, stderr }));
  });
}

describe('access: only authorized ids get in', () => {
  beforeAll(async () => {
    serverState = await h.dir('server');
    for (const name of ['alice', 'mallory', 'bob', 'dave', 'attacker'] as const) {
      stateDirs[name] = await h.dir(`${name}-state`);
      ids[name] = await identityIn(stateDirs[name], name);
    }
    serverId = (await identityIn(serverState, 'group-server')).signer.id;
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({
      groups: [
        { name: 'Developers', members: [ids.alice.signer.id, ids.bob.signer.id, ids.dave.signer.id] },
        { name: 'Designers', members: [] },
      ],
    }));
    server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', ...network]);
    tcpPort = Number((await server.waitForMsg('group-server started')).tcpPort);
    for (const name of ['alice', 'mallory'] as const) {
      downloads[name] = await h.dir(`${name}-dl`);
      members[name] = h.spawn(name, CLIENT_BIN, [
        '--join', 'Developers', '--server-id', serverId, '--state-dir', stateDirs[name], '--downloads', downloads[name], '--name', name, ...network,
      ]);
    }
    await server.waitForMsg('member online', { member: ids.alice.signer.id });
    udp = await Udp.open();
  });

  afterAll(async () => {
    udp?.close();
    await h.cleanup();
  });

  it('an unauthorized member gets nothing, not even the file names, and its TLS connection is refused', async () => {
    const refused = await members.mallory.waitForLog((l) => l.msg === 'join refused' && l.group === 'Developers');
    expect(refused.reason).toBe('not authorized');

    const file = join(serverState, 'roadmap-2027-secret.txt');
    await writeFile(file, 'the plan');
    const result = await h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', serverState, '--json']);
    expect(result.code, result.stderr).toBe(0);
    await members.alice.waitForMsg('received', { file: 'roadmap-2027-secret.txt' });

    // Its own key, presented over TLS, is refused before a single frame.
    const attempt = await tlsAttempt(tcpPort, ids.mallory);
    expect(attempt.bytes).toBe(0);
    await server.waitForLog((l) => l.msg === 'refused connection from unauthorized id' && l.member === ids.mallory.signer.id);

    expect(members.mallory.logs.some((l) => l.msg === 'offer' || l.msg === 'connected')).toBe(false);
    expect(JSON.stringify(members.mallory.logs)).not.toContain('roadmap');
    expect(await filesUnder(downloads.mallory)).toEqual([]);
    expect(await filesUnder(downloads.alice)).toEqual(['Developers/roadmap-2027-secret.txt']);
    expect((await memberRecord(ids.mallory.signer.id))?.allowedIn ?? []).toEqual([]);
  });

  it('a TLS client with a self-made certificate, or with none, is refused before any frame', async () => {
    const stranger = await identityIn(await h.dir('stranger'), 'stranger');
    const withCert = await tlsAttempt(tcpPort, stranger);
    expect(withCert.bytes).toBe(0);
    await server.waitForLog((l) => l.msg === 'refused connection from unauthorized id' && l.member === stranger.signer.id);

    const before = refusals(undefined);
    const withoutCert = await tlsAttempt(tcpPort, undefined);
    expect(withoutCert.bytes).toBe(0);
    await server.waitForLog(() => refusals(undefined) > before, 10_000, 'a refusal of a connection without a certificate');
  });

  it('a refused id that keeps reconnecting is logged once a minute, not once per connection, and every refusal is counted', async () => {
    const stubborn = await identityIn(await h.dir('stubborn'), 'stubborn');
    const counted = async (): Promise<number> => (await serverStatus(serverState)).server.connections.refused;
    const before = await counted();
    const attempts = 5;
    for (let i = 0; i < attempts; i++) expect((await tlsAttempt(tcpPort, stubborn)).bytes).toBe(0);
    await until(async () => ((await counted()) >= before + attempts ? true : undefined), `${attempts} more refusals counted`);
    expect(refusals(stubborn.signer.id)).toBe(1);
  });

  it('a forged JOIN cannot enroll another member, and a forged LEAVE cannot remove one', async () => {
    const bob = ids.bob.signer.id;
    // The attacker's own key: the server sees the attacker's id, not bob's, and refuses it.
    const asItself = craft({ type: 'join', group: 'Developers', proof: Buffer.alloc(0) }, ids.attacker.signer);
    await udp.send(asItself, DEFAULT_GROUP_ADDRESS, port);
    const nak = await udp.answerTo(nonceOf(asItself));
    expect(nak.datagram.message).toMatchObject({ type: 'nak', reason: NakReason.NOT_AUTHORIZED });

    // Bob's public key in the envelope, the attacker's signature: dropped as a bad signature.
    const signatures = await dropped('GC_ERR_WIRE_SIGNATURE');
    const posingAsBob = craft({ type: 'join', group: 'Developers', proof: Buffer.alloc(0) }, forgedSigner(ids.bob.signer, ids.attacker.signer));
    await udp.send(posingAsBob, DEFAULT_GROUP_ADDRESS, port);
    await droppedOnce('GC_ERR_WIRE_SIGNATURE', signatures);

    const posingAsAlice = craft({ type: 'leave', group: 'Developers' }, forgedSigner(ids.alice.signer, ids.attacker.signer));
    await udp.send(posingAsAlice, DEFAULT_GROUP_ADDRESS, port);
    await droppedOnce('GC_ERR_WIRE_SIGNATURE', signatures + 1);

    expect(udp.received.some(({ datagram: { message } }) => message.type !== 'nak' || !message.request.equals(nonceOf(asItself)))).toBe(false);
    expect((await memberRecord(bob))?.joined ?? []).toEqual([]);
    expect(server.logs.some((l) => l.msg === 'member joined' && l.member === bob)).toBe(false);
    expect((await memberRecord(ids.alice.signer.id))?.joined).toEqual(['Developers']);
  });

  it('a replayed or stale JOIN has no second effect', async () => {
    const dave = ids.dave.signer;
    const join = craft({ type: 'join', group: 'Developers', proof: Buffer.alloc(0) }, dave);
    await udp.send(join, DEFAULT_GROUP_ADDRESS, port);
    expect((await udp.answerTo(nonceOf(join))).datagram.message.type).toBe('ack');
    const leave = craft({ type: 'leave', group: 'Developers' }, dave);
    await udp.send(leave, DEFAULT_GROUP_ADDRESS, port);
    expect((await udp.answerTo(nonceOf(leave))).datagram.message.type).toBe('ack');
    expect((await memberRecord(dave.id))?.joined).toEqual([]);

    const replays = await dropped('GC_ERR_REPLAY');
    await udp.send(join, DEFAULT_GROUP_ADDRESS, port);
    await droppedOnce('GC_ERR_REPLAY', replays);
    const stale = await dropped('GC_ERR_STALE');
    const old = craft({ type: 'join', group: 'Developers', proof: Buffer.alloc(0) }, dave, { timestamp: Date.now() - 120_000 });
    await udp.send(old, DEFAULT_GROUP_ADDRESS, port);
    await droppedOnce('GC_ERR_STALE', stale);

    expect(server.logs.filter((l) => l.msg === 'member joined' && l.member === dave.id)).toHaveLength(1);
    expect((await memberRecord(dave.id))?.joined).toEqual([]);
    expect(udp.received.filter(({ datagram: { message } }) => message.type === 'ack' && message.request.equals(nonceOf(join)))).toHaveLength(1);
  });

  it.skipIf(process.getuid?.() !== 0)('another local user cannot reach the control socket, even through a readable state dir', async ({ skip }) => {
    const installed = await installForUser(h, NOBODY);
    if ('unavailable' in installed) {
      console.warn(`[access] skipped: ${installed.unavailable}`);
      return skip(installed.unavailable);
    }
    const { serverBin } = installed;
    // A file that nobody may read, so that distribute gets as far as the socket.
    const shared = await h.dir('shared');
    await chmod(shared, 0o755);
    await writeFile(join(shared, 'payload.txt'), 'x', { mode: 0o644 });
    const tryAll = async (): Promise<void> => {
      for (const args of [
        ['status'],
        ['members', 'allow', 'Developers', ids.mallory.signer.id],
        ['distribute', 'Developers', join(shared, 'payload.txt')],
      ]) {
        const { code, stderr } = await runAsNobody(serverBin, [...args, '--state-dir', serverState]);
        expect(code, stderr).toBe(1);
        expect(stderr).toMatch(/permission denied on .*control\.sock/);
      }
    };
    await tryAll();
    // An operator who opens the state directory up still does not open the socket (mode 0600).
    await chmod(serverState, 0o711);
    try {
      await tryAll();
    } finally {
      await chmod(serverState, 0o700);
    }
    expect((await memberRecord(ids.mallory.signer.id))?.allowedIn ?? []).toEqual([]);
  });

  it('a rogue server announcing the same groups is ignored, and the member never connects to it', async () => {
    const rogueState = await h.dir('rogue');
    const config = join(rogueState, 'config.json');
    await writeFile(config, JSON.stringify({
      groups: [{ name: 'Developers', members: [ids.alice.signer.id] }, { name: 'Designers', members: [ids.alice.signer.id] }],
    }));
    const rogue = h.spawn('rogue', SERVER_BIN, ['--config', config, '--state-dir', rogueState, '--tcp-port', '0', '--name', 'Office server', ...network]);
    const rogueId = String((await rogue.waitForMsg('group-server started')).id);
    expect(rogueId).not.toBe(serverId);
    await members.alice.waitForLog((l) => l.msg === 'ignoring a server that is not the pinned one' && l.server === rogueId);

    const file = join(rogueState, 'malware.sh');
    await writeFile(file, 'echo pwned');
    const pushed = await h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', rogueState]);
    expect(pushed.code, pushed.stdout).toBe(4);
    const status = await serverStatus(rogueState);
    expect(status.server.connections.admitted).toBe(0);
    expect(status.members.find((m) => m.id === ids.alice.signer.id)?.joined ?? []).toEqual([]);
    expect(members.alice.logs.filter((l) => l.msg === 'connected').map((l) => l.server)).toEqual([serverId]);
    expect(await filesUnder(downloads.alice)).toEqual(['Developers/roadmap-2027-secret.txt']);
    await rogue.stop();
  });
});
