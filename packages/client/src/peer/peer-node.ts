import { connect, createSecureContext, createServer, type SecureContext, type Server, type TLSSocket } from 'node:tls';
import {
  ALPN_PEERS, Capability, encodeFrame, errnoCode, ErrorCode, FrameReader, GroupcastError, peerIdOf, PROTOCOL_VERSION,
  shortId, TLS_CIPHERS, TokenBucket,
  type Frame, type Identity, type Logger, type PeerEntry, type PeerId,
} from '@groupcast/shared';
import { PeerLink, type LinkOwner } from './peer-link.js';

/** The peer port when none is given. */
export const DEFAULT_PEER_PORT = 47702;
/** TLS plus HELLO and BITFIELD must be done within this, or the connection is closed. */
export const PEER_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Links one member keeps per transfer, dialed and accepted together. The overlay makes 8 (see
 * DIAL_OFFSETS); the rest absorbs links made while the list was still growing (members joining a
 * swarm one after another), which at 8 turned the overlay's own dials away.
 */
export const MAX_PEER_LINKS = 12;
/** Connections still in their handshake at once; more are refused before TLS work is spent on them. */
const MAX_HANDSHAKING = 32;

/** A transfer this member takes part in, as the node routes links to it. */
export interface SwarmHandle extends LinkOwner {
  /** Whether the server listed this id as a peer for the transfer (and it was not dropped for a bad piece). */
  admits(id: PeerId): boolean;
  linkCount(): number;
  attach(link: PeerLink): void;
  /** A dial ended without a link (refused, unreachable, handshake failed). */
  dialEnded(id: PeerId): void;
}

export interface PeerNodeOptions {
  log: Logger;
  identity: Identity;
  name: string;
  /** 0 picks a free port. */
  port: number;
  host: string;
  /** `--peer-rate`: bytes per second served to peers at most, over every link; unlimited when undefined. */
  rate?: number | undefined;
}

export interface PeerCounters {
  refused: number;
  accepted: number;
  dialed: number;
}

/**
 * This member's peer port: a TLS 1.3 listener that admits only ids the server listed for a transfer
 * this member takes part in, and the dialer for links this member opens. Both run the same handshake —
 * HELLO, then BITFIELD naming the transfer — under one deadline, then hand the link to the transfer's swarm.
 */
export class PeerNode {
  private server: Server | undefined;
  private readonly swarms = new Map<string, SwarmHandle>();
  private handshaking = 0;
  readonly counters: PeerCounters = { refused: 0, accepted: 0, dialed: 0 };
  private readonly limits: TokenBucket[];
  /** One context for every dial: building one parses the key and certificate, a few ms each time. */
  private readonly dialContext: SecureContext;

  constructor(private readonly options: PeerNodeOptions) {
    this.limits = options.rate === undefined ? [] : [new TokenBucket(options.rate)];
    this.dialContext = createSecureContext({ cert: options.identity.certPem, key: options.identity.keyPem, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS });
  }

  /** Peer links open now, over every transfer (finished ones still serving included). */
  get links(): number {
    let count = 0;
    for (const swarm of this.swarms.values()) count += swarm.linkCount();
    return count;
  }

  /** Binds the peer port. The default port taken (several members on one host) falls back to any free one. */
  async start(): Promise<void> {
    const server = createServer({
      cert: this.options.identity.certPem,
      key: this.options.identity.keyPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      ciphers: TLS_CIPHERS,
      ALPNProtocols: [ALPN_PEERS],
      handshakeTimeout: PEER_HANDSHAKE_TIMEOUT_MS,
    });
    server.on('secureConnection', (socket) => this.accepted(socket));
    server.on('tlsClientError', () => this.counters.refused++);
    server.on('connection', (socket) => {
      if (this.handshaking >= MAX_HANDSHAKING) {
        this.counters.refused++;
        socket.destroy();
      }
    });
    this.server = server;
    try {
      await this.listen(this.options.port);
    } catch (err) {
      if (this.options.port !== DEFAULT_PEER_PORT || errnoCode(err) !== 'EADDRINUSE') throw err;
      this.options.log.warn({ port: DEFAULT_PEER_PORT }, 'default peer port in use; serving peers on a free port instead');
      await this.listen(0);
    }
    server.on('error', (err) => this.options.log.error({ err }, 'peer listener error'));
  }

  private listen(port: number): Promise<void> {
    const server = this.server!;
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  get port(): number {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : 0;
  }

  get id(): PeerId {
    return this.options.identity.signer.id;
  }

  register(transferHex: string, swarm: SwarmHandle): void {
    this.swarms.set(transferHex, swarm);
  }

  unregister(transferHex: string, swarm: SwarmHandle): void {
    if (this.swarms.get(transferHex) === swarm) this.swarms.delete(transferHex);
  }

  private hello(): Buffer {
    return encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: this.options.name, caps: { flags: Capability.PIECES | Capability.PEERS, peerPort: this.port } });
  }

  private accepted(socket: TLSSocket): void {
    const id = peerIdOf(socket);
    const listed = id && [...this.swarms.values()].some((swarm) => swarm.admits(id));
    if (!id || !listed || socket.alpnProtocol !== ALPN_PEERS) {
      this.counters.refused++;
      this.options.log.debug({ peer: id, address: socket.remoteAddress }, 'refused a peer the server did not list');
      socket.destroy();
      return;
    }
    this.counters.accepted++;
    this.handshake(socket, id, undefined);
  }

  /** Opens a link to a listed peer for one transfer. */
  dial(entry: PeerEntry, transferHex: string): void {
    const swarm = this.swarms.get(transferHex);
    if (!swarm) return;
    this.counters.dialed++;
    const socket = connect({
      host: entry.address, port: entry.port, secureContext: this.dialContext, ALPNProtocols: [ALPN_PEERS],
      rejectUnauthorized: false, checkServerIdentity: () => undefined,
    });
    socket.on('error', (err) => this.options.log.debug({ err, peer: shortId(entry.id as PeerId) }, 'peer connection error'));
    const deadline = setTimeout(() => socket.destroy(), PEER_HANDSHAKE_TIMEOUT_MS);
    deadline.unref();
    let linked = false;
    socket.once('close', () => {
      clearTimeout(deadline);
      if (!linked) swarm.dialEnded(entry.id as PeerId);
    });
    socket.once('secureConnect', () => {
      clearTimeout(deadline);
      const id = peerIdOf(socket);
      if (id !== entry.id || socket.alpnProtocol !== ALPN_PEERS) {
        this.options.log.warn({ expected: entry.id, presented: id }, 'peer presented another id; not linking');
        socket.destroy();
        return;
      }
      this.handshake(socket, id, swarm, () => (linked = true));
    });
  }

  /**
   * Both sides send HELLO and then BITFIELD for the transfer; the link opens once both have arrived.
   * A dialer knows its swarm; an acceptor learns it from the BITFIELD, and the peer must be listed there.
   */
  private handshake(socket: TLSSocket, id: PeerId, dialedFor: SwarmHandle | undefined, opened?: () => void): void {
    this.handshaking++;
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    let settled = false;
    const deadline = setTimeout(() => fail(new GroupcastError(ErrorCode.TIMEOUT, 'peer handshake timed out')), PEER_HANDSHAKE_TIMEOUT_MS);
    deadline.unref();
    const settle = (): void => {
      if (settled) return;
      settled = true;
      this.handshaking--;
      clearTimeout(deadline);
    };
    const log = this.options.log.child({ peer: shortId(id) });
    const fail = (err: Error): void => {
      settle();
      log.debug({ err }, 'peer handshake failed');
      socket.destroy();
    };
    let greeted = false;
    let link: PeerLink | undefined;
    /** What our BITFIELD told the peer: pieces kept after it are announced when the link opens. */
    let sentBits: Buffer = Buffer.alloc(0);
    const reader = new FrameReader((frame: Frame) => {
      if (link) return link.onFrame(frame);
      if (!greeted) {
        if (frame.type !== 'hello') throw new GroupcastError(ErrorCode.PROTOCOL, `expected HELLO from a peer, got ${frame.type}`);
        greeted = true;
        return;
      }
      if (frame.type !== 'bitfield') throw new GroupcastError(ErrorCode.PROTOCOL, `expected BITFIELD from a peer, got ${frame.type}`);
      const swarm = dialedFor ?? this.swarms.get(frame.transfer.toString('hex'));
      if (!swarm || !swarm.transfer.equals(frame.transfer) || !swarm.admits(id)) {
        throw new GroupcastError(ErrorCode.NOT_AUTHORIZED, 'peer is not listed for that transfer');
      }
      if (swarm.linkCount() >= MAX_PEER_LINKS) throw new GroupcastError(ErrorCode.PROTOCOL, 'enough peer links for that transfer');
      if (!dialedFor) {
        sentBits = swarm.held.toWire();
        socket.write(Buffer.concat([this.hello(), encodeFrame({ type: 'bitfield', transfer: swarm.transfer, bits: sentBits })]));
      }
      settle();
      link = new PeerLink(id, socket, reader, swarm, log.child({ transfer: frame.transfer.toString('hex') }), frame.bits, this.limits, sentBits);
      opened?.();
      swarm.attach(link);
    });
    reader.on('error', (err) => {
      if (link) link.close(err);
      else fail(err);
    });
    socket.once('close', () => {
      if (!link) fail(new GroupcastError(ErrorCode.CLOSED, 'peer closed during the handshake'));
    });
    socket.pipe(reader);
    if (dialedFor) {
      sentBits = dialedFor.held.toWire();
      socket.write(Buffer.concat([this.hello(), encodeFrame({ type: 'bitfield', transfer: dialedFor.transfer, bits: sentBits })]));
    }
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
