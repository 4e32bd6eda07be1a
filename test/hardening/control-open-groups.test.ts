import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, NakReason, PROTOCOL_VERSION, TLS_CIPHERS, type PeerId, type Signer } from '../../packages/shared/src/index.js';
import { SERVER_BIN, harness, testPort, type Daemon } from '../support/daemons.js';
import { craft, freshSigner, identityIn, nonceOf, serverStatus, Udp, until } from '../security/tools.js';

/**
 * Issue 9, item 5: an open group must stay bounded whatever keys the LAN makes up. A real server with
 * the open group Lobby (cap 5, idle expiry 4 s, one configured member) and the closed group Closed.
 */
const h = harness();
const port = testPort();
const SERVER = '127.0.0.1';
const CAP = 5;
const EXPIRY = '4s';

let serverState: string;
let server: Daemon;
let tcpPort: number;
const configured = freshSigner();
const guests: Signer[] = [];
const sockets: Udp[] = [];

async function socket(address: string): Promise<Udp> {
  const udp = await Udp.open(address);
  sockets.push(udp);
  return udp;
}

interface Status {
  server: { control: { naks: number }; membership?: { persisted: number } };
  members: Array<{ id: string; joined: string[] }>;
}

const status = async (): Promise<Status> => (await serverStatus(serverState)) as unknown as Status;

/** Sends a JOIN or LEAVE unicast and resolves with the answer's message. */
async function ask(udp: Udp, op: 'join' | 'leave', group: string, signer: Signer) {
  const request = craft(op === 'join' ? { type: 'join', group, proof: Buffer.alloc(0) } : { type: 'leave', group }, signer);
  await udp.send(request, SERVER, port);
  return (await udp.answerTo(nonceOf(request))).datagram.message;
}

describe('open groups are bounded', () => {
  beforeAll(async () => {
    serverState = await h.dir('server');
    const config = join(serverState, 'config.json');
    await writeFile(config, JSON.stringify({
      groups: [
        { name: 'Lobby', open: true, members: [configured.id] },
        { name: 'Closed', members: [] },
      ],
    }));
    server = h.spawn('server', SERVER_BIN, [
      '--config', config, '--state-dir', serverState, '--tcp-port', '0', '--interface', SERVER, '--port', String(port),
      '--max-open-members', String(CAP), '--open-member-expiry', EXPIRY,
    ]);
    tcpPort = Number((await server.waitForMsg('group-server started')).tcpPort);
  });

  afterAll(async () => {
    for (const udp of sockets) udp.close();
    await h.cleanup();
  });

  it('takes at most --max-open-members fresh keys; the next are refused GROUP_FULL, a configured member still gets in', async () => {
    const udp = await socket('127.0.0.21');
    const answers = [];
    for (let i = 0; i < CAP + 2; i++) {
      const signer = freshSigner();
      const answer = await ask(udp, 'join', 'Lobby', signer);
      answers.push(answer);
      if (answer.type === 'ack') guests.push(signer);
    }
    expect(answers.map((a) => a.type)).toEqual([...Array(CAP).fill('ack'), 'nak', 'nak']);
    expect(answers.at(-1)).toMatchObject({ type: 'nak', reason: NakReason.GROUP_FULL });
    // A member already in is answered as before, and the configured one is not counted against the cap.
    expect(await ask(udp, 'join', 'Lobby', guests[0]!)).toMatchObject({ type: 'ack' });
    expect(await ask(udp, 'join', 'Lobby', configured)).toMatchObject({ type: 'ack' });
    const lobby = (await status()).members.filter((m) => m.joined.includes('Lobby'));
    expect(lobby).toHaveLength(CAP + 1);
  });

  it('a TLS connection alone, which an open group admits, records nothing', async () => {
    const intruder = await identityIn(await h.dir('intruder'));
    let tls: TLSSocket | undefined;
    try {
      tls = connect({
        host: SERVER, port: tcpPort, cert: intruder.certPem, key: intruder.keyPem, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS,
        rejectUnauthorized: false, checkServerIdentity: () => undefined,
      });
      tls.on('error', () => undefined);
      tls.once('secureConnect', () => tls?.write(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: 'intruder' })));
      await server.waitForMsg('member online', { member: intruder.signer.id });
      expect((await status()).members.map((m) => m.id)).not.toContain(intruder.signer.id);
    } finally {
      tls?.destroy();
    }
  });

  it('forgets members not seen for --open-member-expiry, keeps the configured one, and the freed places take new members', async () => {
    const ids = guests.map((g) => g.id);
    await until(async () => {
      const members = (await status()).members.map((m) => m.id);
      return ids.every((id) => !members.includes(id)) ? true : undefined;
    }, 'idle open-group members expired', 30_000);
    const members = (await status()).members;
    expect(members.find((m) => m.id === configured.id)?.joined).toEqual(['Lobby']);
    expect(server.logs.filter((l) => l.msg === 'idle member expired').length).toBeGreaterThanOrEqual(CAP);
    const onDisk = await until(async () => {
      const saved = JSON.parse(await readFile(join(serverState, 'members.json'), 'utf8')) as { members: Array<{ id: PeerId }> };
      return saved.members.every((m) => !ids.includes(m.id)) ? saved.members : undefined;
    }, 'members.json without the expired members');
    expect(onDisk.map((m) => m.id)).toContain(configured.id);
    const udp = await socket('127.0.0.22');
    expect(await ask(udp, 'join', 'Lobby', freshSigner())).toMatchObject({ type: 'ack' });
  });

  it('logs refused JOINs at a rate limit, and counts every one', async () => {
    const udp = await socket('127.0.0.23');
    const before = (await status()).server.control.naks;
    const refused = (): number => server.logs.filter((l) => l.msg === 'join refused' && l.reason === 'not authorized').length;
    const linesBefore = refused();
    for (let i = 0; i < 40; i++) expect(await ask(udp, 'join', 'Closed', freshSigner())).toMatchObject({ type: 'nak', reason: NakReason.NOT_AUTHORIZED });
    expect((await status()).server.control.naks - before).toBe(40);
    expect(refused() - linesBefore).toBeLessThanOrEqual(1);
  });

  it('a storm of membership changes rewrites members.json every 2 s at most, not every 200 ms', async () => {
    const senders = await Promise.all(['127.0.0.24', '127.0.0.25'].map(socket));
    const before = (await status()).server.membership?.persisted ?? 0;
    const started = Date.now();
    // Three seconds of JOIN and LEAVE by the configured member: each one changes what is on disk.
    for (let i = 0; Date.now() - started < 3_000 && i < 200; i++) {
      const answer = await ask(senders[i % 2]!, i % 2 === 0 ? 'leave' : 'join', 'Lobby', configured);
      expect(answer.type).toBe('ack');
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    const elapsed = Date.now() - started;
    await until(async () => ((await status()).server.membership?.persisted ?? 0) > before ? true : undefined, 'members.json written');
    const writes = ((await status()).server.membership?.persisted ?? 0) - before;
    expect(writes).toBeGreaterThan(0);
    expect(writes).toBeLessThanOrEqual(Math.ceil(elapsed / 2_000) + 2);
  });
});
