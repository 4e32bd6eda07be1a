import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import {
  ALPN_PIECES, Capability, ControlEndpoint, createLogger, DATA_CHUNK, encodeFrame, encodeManifest, FrameReader, PROTOCOL_VERSION, resolveInterface,
  TLS_CIPHERS, TRANSFER_ID_LENGTH, TREE_CHUNK,
  type Frame, type Identity, type Manifest,
} from '../../packages/shared/src/index.js';

/**
 * A hostile server for attack tests: the real one refuses unsafe names and trees before anything is
 * sent, so these tests play a server of their own, built from the shared codecs, that the member pins.
 */
export type Reply = Extract<Frame, { type: 'accept' | 'decline' | 'result' }>;

/** Just enough of a group-server: answers LIST and JOIN, accepts the member's TLS connection, and offers what it is told to. */
export class HostileServer {
  private server: Server | undefined;
  private endpoint: ControlEndpoint | undefined;
  private socket: TLSSocket | undefined;
  private readonly replies: Reply[] = [];
  private wake: (() => void) | undefined;
  private connectedNow: (() => void) | undefined;
  readonly connected = new Promise<void>((resolve) => (this.connectedNow = resolve));
  closed = false;
  /** The capability bits the member said in HELLO. */
  memberCaps = 0;

  /**
   * `tlsIdentity`: present another key over TLS than the one that signs datagrams, as a man in the middle would.
   * `pieces`: select `gcdp/1.1` and say *pieces* in HELLO, so the member takes MANIFEST and TREE frames.
   */
  constructor(
    readonly identity: Identity, private readonly groups: string[], private readonly tlsIdentity = identity, private readonly pieces = false,
  ) {}

  async start(port: number): Promise<void> {
    const server = createServer({
      cert: this.tlsIdentity.certPem, key: this.tlsIdentity.keyPem, requestCert: true, rejectUnauthorized: false,
      minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS, ...(this.pieces ? { ALPNProtocols: [ALPN_PIECES] } : {}),
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
        socket.write(encodeFrame({
          type: 'hello', version: PROTOCOL_VERSION, name: 'Office server',
          ...(this.pieces ? { caps: { flags: Capability.PIECES, peerPort: 0 } } : {}),
        }));
        this.memberCaps = frame.caps?.flags ?? 0;
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

  /**
   * Offers a tree: its manifest in TREE parts, the OFFER (size: its files' bytes, sha256: of the
   * manifest), and if accepted `data` (the files' concatenation) from the offset the member holds.
   */
  async offerTree(group: string, name: string, manifest: Manifest, data: Buffer = Buffer.alloc(0)): Promise<Array<Reply | 'closed'>> {
    const transfer = randomBytes(TRANSFER_ID_LENGTH);
    const bytes = encodeManifest(manifest);
    for (let offset = 0; offset < bytes.length; offset += TREE_CHUNK) {
      this.socket?.write(encodeFrame({ type: 'tree', transfer, total: bytes.length, offset, chunk: bytes.subarray(offset, offset + TREE_CHUNK) }));
    }
    const size = manifest.entries.reduce((sum, entry) => sum + entry.size, 0);
    this.socket?.write(encodeFrame({ type: 'offer', transfer, group, name, size, sha256: createHash('sha256').update(bytes).digest() }));
    const first = await this.next();
    if (first === 'closed' || first.type !== 'accept') return [first];
    for (let offset = first.offset; offset < size; offset += DATA_CHUNK) {
      this.socket?.write(encodeFrame({ type: 'data', transfer, offset, payload: data.subarray(offset, Math.min(size, offset + DATA_CHUNK)) }));
    }
    return [first, await this.next()];
  }

  async close(): Promise<void> {
    this.endpoint?.close();
    this.socket?.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}


export const outcome = (replies: Array<Reply | 'closed'>): number | string => {
  const [first] = replies;
  if (first === undefined || first === 'closed') return 'closed';
  return first.type === 'decline' ? first.outcome : `${first.type}`;
};
