import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId, TRANSFER_ID_LENGTH, type Identity } from '../../packages/shared/src/index.js';
import { SERVER_BIN, harness } from '../support/daemons.js';
import { identityIn, joinAs } from '../security/tools.js';
import { connectionCounters, deliveries, HostileLink, startServer, type Server } from './session-tools.js';

/**
 * The data plane's rules for a member (PROTOCOL.md 7 and 10), against a real server: a frame at the
 * wrong time closes the connection, nothing is offered before HELLO, a connection that never says
 * HELLO is closed, and a member that breaks the protocol on every offer pays an attempt each time
 * until its delivery fails, instead of being re-offered forever. The server's HELLO deadline and retry
 * backoff are shortened (GC_HELLO_TIMEOUT_MS, GC_RETRY_BASE_MS), so the tests that wait them out take
 * seconds instead of half a minute.
 */
const h = harness();
const NAMES = ['replier', 'twice', 'early', 'silent', 'offsets'] as const;
type Name = (typeof NAMES)[number];
/** distributor.ts MAX_ATTEMPTS. */
const MAX_ATTEMPTS = 5;
const HELLO_TIMEOUT_MS = 2_000;

describe('data plane conformance of a member', () => {
  let server: Server;
  const ids = {} as Record<Name, Identity>;
  const links: HostileLink[] = [];

  /** Waits until the server logs that it closed this member's connection for a protocol violation. */
  const violationOf = (name: Name, timeoutMs?: number) => server.daemon.waitForLog(
    (l) => l.msg === 'member connection closed' && l.member === shortId(ids[name].signer.id)
      && (l.err as { code?: string } | undefined)?.code === 'GC_ERR_PROTOCOL',
    timeoutMs, `a protocol violation by ${name}`,
  );

  const open = async (name: Name, onFrame?: Parameters<typeof HostileLink.open>[2]): Promise<HostileLink> => {
    const link = await HostileLink.open(server.tcpPort, ids[name], onFrame);
    links.push(link);
    return link;
  };

  const distribute = async (group: string, name: string): Promise<void> => {
    const file = join(await h.dir('files'), name);
    await writeFile(file, randomBytes(4096));
    // Not awaited to the end: the members here never finish a delivery. Its exit is not what is tested.
    void h.run(SERVER_BIN, ['distribute', group, file, '--state-dir', server.state, '--json'], 60_000).catch(() => undefined);
  };

  beforeAll(async () => {
    for (const name of NAMES) ids[name] = await identityIn(await h.dir(name), name);
    const everyone = NAMES.map((name) => ids[name].signer.id);
    server = await startServer(h, [
      { name: 'Developers', members: everyone },
      { name: 'Silent', members: [ids.silent.signer.id] },
      { name: 'Offsets', members: [ids.offsets.signer.id] },
    ], [], { GC_HELLO_TIMEOUT_MS: String(HELLO_TIMEOUT_MS), GC_RETRY_BASE_MS: '100' });
  });

  afterAll(async () => {
    for (const link of links) link.destroy();
    await h.cleanup();
  });

  it('an ACCEPT for a transfer never offered closes the connection; the server stays healthy', async () => {
    const link = await open('replier');
    link.hello();
    await server.daemon.waitForMsg('member online', { member: ids.replier.signer.id });
    link.send({ type: 'accept', transfer: randomBytes(TRANSFER_ID_LENGTH), offset: 0 });
    const closed = await violationOf('replier');
    expect(String((closed.err as { message: string }).message)).toContain('not offered');
    await link.whenClosed();
    // Still serving: a new connection from the same member is admitted and greeted.
    const again = await open('replier');
    again.hello();
    await again.frame('hello');
    expect(again.closed).toBe(false);
  });

  it('a second HELLO closes the connection', async () => {
    const link = await open('twice');
    link.hello();
    link.hello();
    await violationOf('twice');
    await link.whenClosed();
  });

  it('a first frame other than HELLO closes the connection', async () => {
    const link = await open('early');
    link.send({ type: 'ping', time: Date.now() });
    await violationOf('early');
    await link.whenClosed();
  });

  it.concurrent('nothing is offered before HELLO, and a connection without HELLO is closed after the deadline', async () => {
    await joinAs(ids.silent.signer, 'Silent', server.udpPort);
    const link = await open('silent');
    await link.frame('hello');
    await distribute('Silent', 'to-the-silent.txt');
    // The distribute command is not awaited: on a loaded machine it may record the delivery only after the deadline.
    await server.daemon.waitForMsg('distribution recorded', { file: 'to-the-silent.txt' }, 30_000);
    const closed = await violationOf('silent', 30_000);
    expect(String((closed.err as { message: string }).message)).toContain(`no HELLO within ${(HELLO_TIMEOUT_MS / 1000).toFixed(1)}s`);
    await link.whenClosed();
    expect(link.frames.map((f) => f.type).filter((type) => type !== 'ping')).toEqual(['hello']);
    const [delivery] = (await deliveries(server)).filter((d) => d.member === ids.silent.signer.id);
    expect(delivery?.state).toBe('pending');
    expect(delivery?.attempts).toBe(0);
  });

  it.concurrent('ACCEPT past the size on every offer: each costs an attempt, and the delivery ends failed', async () => {
    await joinAs(ids.offsets.signer, 'Offsets', server.udpPort);
    let offers = 0;
    let reconnects = 0;
    // Like a member that reconnects at once whenever the server hangs up (bounded).
    const connectAndMisbehave = async (): Promise<void> => {
      const link = await open('offsets', (frame, self) => {
        if (frame.type !== 'offer') return;
        offers++;
        self.send({ type: 'accept', transfer: frame.transfer, offset: frame.size + 1 });
      });
      link.hello();
      link.socket.once('close', () => {
        if (reconnects++ < 3 * MAX_ATTEMPTS) void connectAndMisbehave().catch(() => undefined);
      });
    };
    await connectAndMisbehave();
    await server.daemon.waitForMsg('member online', { member: ids.offsets.signer.id });
    await distribute('Offsets', 'offset.bin');
    const failed = await server.daemon.waitForLog(
      (l) => l.msg === 'delivery failed' && l.member === ids.offsets.signer.id, 60_000, 'the delivery to fail',
    );
    expect(failed.attempts).toBe(MAX_ATTEMPTS);
    expect(String(failed.reason)).toMatch(/^protocol violation: accept at offset 4097 past the size 4096$/);
    expect(offers).toBe(MAX_ATTEMPTS);
    const [delivery] = (await deliveries(server)).filter((d) => d.member === ids.offsets.signer.id);
    expect(delivery).toMatchObject({ state: 'failed', attempts: MAX_ATTEMPTS });
    expect((await connectionCounters(server)).violations).toBeGreaterThanOrEqual(MAX_ATTEMPTS);
  });
});
