import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ControlEndpoint, createLogger, encodeFrame, FrameReader, loadOrCreateIdentity, Outcome, PROTOCOL_VERSION,
  resolveInterface, TLS_CIPHERS, TRANSFER_ID_LENGTH,
  type Frame, type Identity,
} from '../../packages/shared/src/index.js';
import { CLIENT_BIN, harness, testPort, type Daemon } from '../support/daemons.js';
import { snapshot } from './tools.js';

/**
 * A hostile server: the real one refuses unsafe names before anything is sent, so this test plays a
 * server of its own, built from the shared codecs, that the member pins. It offers files whose names
 * try to escape `DIR/<group>` or overwrite what is there; the member must decline every one, and
 * nothing on disk may change but the one honest file offered as a control.
 */
const h = harness();
const port = testPort();
const network = ['--interface', '127.0.0.1', '--port', String(port)];

type Reply = Extract<Frame, { type: 'accept' | 'decline' | 'result' }>;

/** Just enough of a group-server: answers LIST and JOIN, accepts the member's TLS connection, and offers what it is told to. */
class HostileServer {
  private server: Server | undefined;
  private endpoint: ControlEndpoint | undefined;
  private socket: TLSSocket | undefined;
  private readonly replies: Reply[] = [];
  private wake: (() => void) | undefined;
  private connectedNow: (() => void) | undefined;
  readonly connected = new Promise<void>((resolve) => (this.connectedNow = resolve));
  closed = false;

  /** `tlsIdentity`: present another key over TLS than the one that signs datagrams, as a man in the middle would. */
  constructor(readonly identity: Identity, private readonly groups: string[], private readonly tlsIdentity = identity) {}

  async start(port: number): Promise<void> {
    const server = createServer({
      cert: this.tlsIdentity.certPem, key: this.tlsIdentity.keyPem, requestCert: true, rejectUnauthorized: false,
      minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS,
    });
    server.on('secureConnection', (socket) => this.accept(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    const tcpPort = (server.address() as { port: number }).port;
    const endpoint = new ControlEndpoint({
      log: createLogger({ name: 'hostile', level: 'silent' }),
      signer: this.identity.signer,
      groupAddress: '239.255.77.77',
      port,
      iface: resolveInterface('127.0.0.1', 'IPv4'),
      role: 'server',
    });
    endpoint.on('message', ({ message, nonce }, from) => {
      const to = { address: from.address, port: from.port };
      if (message.type === 'list') {
        const groups = this.groups.map((name) => ({ name, description: '', open: true }));
        endpoint.send({ type: 'groups', request: nonce, page: 0, pages: 1, tcpPort, groups }, to);
      } else if (message.type === 'join') {
        endpoint.send({ type: 'ack', request: nonce, op: 'join', group: message.group, tcpPort, proof: Buffer.alloc(0) }, to);
      }
    });
    await endpoint.open();
    this.endpoint = endpoint;
  }

  private accept(socket: TLSSocket): void {
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    socket.pipe(new FrameReader((frame) => {
      if (frame.type === 'hello') {
        this.socket = socket;
        socket.write(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: 'Office server' }));
        this.connectedNow?.();
      } else if (frame.type === 'accept' || frame.type === 'decline' || frame.type === 'result') {
        this.replies.push(frame);
        this.wake?.();
      } else if (frame.type === 'ping') {
        socket.write(encodeFrame({ type: 'pong', time: frame.time }));
      }
    }));
  }

  private next(timeoutMs = 10_000): Promise<Reply | 'closed'> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the member did not answer')), timeoutMs);
      const check = (): void => {
        const reply = this.replies.shift();
        if (!reply && !this.closed) return;
        clearTimeout(timer);
        this.wake = undefined;
        resolve(reply ?? 'closed');
      };
      this.wake = check;
      check();
    });
  }

  /** Offers a file; if accepted, sends it. Returns what the member answered, in order. */
  async offer(group: string, name: string, content = Buffer.from('payload\n')): Promise<Array<Reply | 'closed'>> {
    const transfer = randomBytes(TRANSFER_ID_LENGTH);
    const sha256 = createHash('sha256').update(content).digest();
    this.socket?.write(encodeFrame({ type: 'offer', transfer, group, name, size: content.length, sha256 }));
    const first = await this.next();
    if (first === 'closed' || first.type !== 'accept') return [first];
    this.socket?.write(encodeFrame({ type: 'data', transfer, offset: first.offset, payload: content.subarray(first.offset) }));
    return [first, await this.next()];
  }

  async close(): Promise<void> {
    this.endpoint?.close();
    this.socket?.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

const outcome = (replies: Array<Reply | 'closed'>): number | string => {
  const [first] = replies;
  if (first === undefined || first === 'closed') return 'closed';
  return first.type === 'decline' ? first.outcome : `${first.type}`;
};

describe('hostile file names from a server the member trusts', () => {
  let root: string;
  let dl: string;
  let hostile: HostileServer;
  let member: Daemon;

  beforeAll(async () => {
    root = await h.dir('names');
    dl = join(root, 'dl');
    await mkdir(join(dl, 'Developers', 'existing-dir'), { recursive: true });
    await mkdir(join(root, 'outside'));
    await writeFile(join(root, 'outside', 'target.txt'), 'outside, must not change');
    await writeFile(join(dl, 'Developers', 'notes.txt'), 'the member wrote this');
    await symlink(join(root, 'outside', 'target.txt'), join(dl, 'Developers', 'link.txt'));
    // A group folder that is a link to elsewhere.
    await symlink(join(root, 'outside'), join(dl, 'Linked'));

    hostile = new HostileServer(await loadOrCreateIdentity(join(root, 'hostile'), 'hostile'), ['Developers', 'Linked']);
    await hostile.start(port);
    member = h.spawn('member', CLIENT_BIN, [
      '--join', 'Developers', '--join', 'Linked', '--server-id', hostile.identity.signer.id,
      '--state-dir', join(root, 'state'), '--downloads', dl, ...network,
    ]);
    await hostile.connected;
  });

  afterAll(async () => {
    await hostile?.close();
    await h.cleanup();
  });

  it('declines every unsafe or clashing name, writes nothing outside DIR/<group>, and overwrites nothing', async () => {
    const before = await snapshot(root, (path) => path === 'state' || path.startsWith('state/'));

    const absolute = join(root, 'outside', 'pwned.txt');
    const unsafe: Array<[string, string]> = [
      ['Developers', '../escape.txt'],
      ['Developers', '../../outside/target.txt'],
      ['Developers', '..'],
      ['Developers', '.'],
      ['Developers', absolute],
      ['Developers', '/etc/passwd'],
      ['Developers', 'nul\u0000byte.txt'],
      ['Developers', 'bell\u0007.txt'],
      ['Developers', 'escape\u001b[31m.txt'],
      ['Developers', 'new\nline.txt'],
      ['Developers', 'c1\u009b.txt'],
      ['Developers', 'back\\slash.txt'],
      ['Developers', '.groupcast-partial'],
      ['Developers', 'x'.repeat(4096)],
      ['Developers', 'é'.repeat(128)],
      ['Developers', ' leading-space.txt'],
    ];
    for (const [group, name] of unsafe) {
      expect(outcome(await hostile.offer(group, name)), JSON.stringify(name.slice(0, 40))).toBe(Outcome.BAD_NAME);
    }
    const clashes: Array<[string, string]> = [
      ['Developers', 'existing-dir'],
      ['Developers', 'notes.txt'],
      ['Developers', 'link.txt'],
      ['Linked', 'inside-a-linked-folder.txt'],
    ];
    for (const [group, name] of clashes) expect(outcome(await hostile.offer(group, name)), name).toBe(Outcome.NAME_CLASH);
    for (const group of ['../Developers', '.groupcast-partial', 'Designers']) {
      expect(outcome(await hostile.offer(group, 'a.txt')), group).toBe(Outcome.NOT_MEMBER);
    }

    // The control: an honest offer is accepted, so the declines above are the member's judgement, not a broken harness.
    const honest = await hostile.offer('Developers', 'ok.txt', Buffer.from('fine\n'));
    expect(honest.map((reply) => (reply === 'closed' ? reply : reply.type))).toEqual(['accept', 'result']);
    expect(await readFile(join(dl, 'Developers', 'ok.txt'), 'utf8')).toBe('fine\n');

    // A name longer than the wire allows (4 KiB) breaks the protocol: the member hangs up instead of writing.
    expect(outcome(await hostile.offer('Developers', 'y'.repeat(4097)))).toBe('closed');

    const after = await snapshot(root, (path) => path === 'state' || path.startsWith('state/'));
    const added = [...after.keys()].filter((path) => !before.has(path));
    const changed = [...before.keys()].filter((path) => after.get(path) !== before.get(path));
    expect(added).toEqual(['dl/Developers/ok.txt']);
    expect(changed).toEqual([]);
    const declines = member.logs.filter((l) => l.msg === 'declined').map((l) => l.outcome);
    expect(declines.filter((o) => o === 'unsafe name')).toHaveLength(unsafe.length);
    expect(declines.filter((o) => o === 'name clash')).toHaveLength(clashes.length);
  });
});

describe('a man in the middle at the pinned server\'s address', () => {
  const mitmPort = testPort();

  afterAll(() => h.cleanup());

  it('the member refuses a TLS key other than the pinned id, and says nothing over that connection', async () => {
    const root = await h.dir('mitm');
    const pinned = await loadOrCreateIdentity(join(root, 'pinned'), 'pinned');
    // It can replay or relay the real server's datagrams, but over TLS it can only show its own key.
    const mitm = new HostileServer(pinned, ['Developers'], await loadOrCreateIdentity(join(root, 'impostor'), 'impostor'));
    await mitm.start(mitmPort);
    try {
      const member = h.spawn('mitm-member', CLIENT_BIN, [
        '--join', 'Developers', '--server-id', pinned.signer.id, '--state-dir', join(root, 'state'), '--downloads', join(root, 'dl'),
        '--interface', '127.0.0.1', '--port', String(mitmPort),
      ]);
      const refused = await member.waitForMsg('server key does not match the pinned id; disconnecting');
      expect(refused.pinned).toBe(pinned.signer.id);
      expect(refused.presented).not.toBe(pinned.signer.id);
      expect(member.logs.some((l) => l.msg === 'connected')).toBe(false);
    } finally {
      await mitm.close();
    }
  });
});
