import { EventEmitter } from 'node:events';
import { connect, type TLSSocket } from 'node:tls';
import {
  ALPN_PIECES, backoffDelay, Capability, disconnectFields, encodeFrame, ErrorCode, FrameReader, GroupcastError, HEARTBEAT_TIMEOUT_MS, peerIdOf,
  isExpectedDisconnect, PROTOCOL_VERSION, RateLimitedLog, TLS_CIPHERS,
  type Frame, type Identity, type Logger, type PeerId,
} from '@groupcast/shared';
import type { Discovery } from '../discovery/discovery.js';
import type { ServerPin } from '../discovery/pinning.js';
import type { Receiver, ReceiveSession } from './receiver.js';

export interface ConnectionEvents {
  /** HELLO exchanged with the pinned server. */
  connected: [server: PeerId, name: string];
  disconnected: [];
}

export interface ConnectionOptions {
  log: Logger;
  identity: Identity;
  /** Sent in HELLO. */
  name: string;
  pin: ServerPin;
  discovery: Discovery;
  receiver: Receiver;
  clock?: (() => number) | undefined;
  heartbeatTimeoutMs?: number | undefined;
}

const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 30_000;

/**
 * The member's one TLS connection to its server, kept up for as long as the daemon runs: dial the
 * latest known address, admit only the pinned server's key, exchange HELLO, hand frames to a receive
 * session, answer PINGs. Any failure — refused, silent, bad frames — ends in a reconnect with backoff.
 */
export class ServerConnection extends EventEmitter<ConnectionEvents> {
  private socket: TLSSocket | undefined;
  private session: ReceiveSession | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private attempt = 0;
  /** The first failed dial of an outage was logged; the rest go to debug until connected again. */
  private outageSaid = false;
  private started = false;
  private closed = false;
  private readonly limited: RateLimitedLog;
  private readonly clock: () => number;
  private readonly timeoutMs: number;

  constructor(private readonly options: ConnectionOptions) {
    super();
    this.limited = new RateLimitedLog(options.log);
    this.clock = options.clock ?? Date.now;
    this.timeoutMs = options.heartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_MS;
  }

  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.dial();
  }

  /** The server's address became known or changed: if waiting to retry, try now. */
  nudge(): void {
    if (!this.started || this.closed || this.socket) return;
    clearTimeout(this.retryTimer);
    this.dial();
  }

  private dial(): void {
    this.retryTimer = undefined;
    if (this.closed || this.socket) return;
    const server = this.options.discovery.server;
    const pinned = this.options.pin.pinned;
    // Nothing to dial yet; nudge() comes when discovery learns the address.
    if (!server || !pinned || server.tcpPort === 0) return;
    const { identity, log: parent } = this.options;
    const log = parent.child({ server: pinned, address: `${server.address}:${server.tcpPort}` });
    log.debug('connecting');
    const socket = connect({
      host: server.address,
      port: server.tcpPort,
      cert: identity.certPem,
      key: identity.keyPem,
      minVersion: 'TLSv1.3',
      ciphers: TLS_CIPHERS,
      // Trust is the pinned id, checked on secureConnect; the certificate is self-signed.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      // A server that knows pieces selects it; an older one ignores it and speaks plain version 1.
      ALPNProtocols: [ALPN_PIECES],
    });
    this.socket = socket;
    let lastHeard = this.clock();
    let busy = false;
    // A handshake that hangs, or a server gone quiet, look the same: nothing heard for too long.
    // Time spent in our own handler (a disk write) is not the server's silence.
    this.heartbeat = setInterval(() => {
      if (!busy && this.clock() - lastHeard > this.timeoutMs) {
        log.warn({ timeoutMs: this.timeoutMs }, 'server silent past the heartbeat timeout; reconnecting');
        socket.destroy();
      }
    }, Math.max(50, Math.min(1000, this.timeoutMs / 3)));
    socket.on('error', (err) => {
      const code = (err as NodeJS.ErrnoException).code ?? err.message;
      const fields = { ...disconnectFields(err), server: pinned, address: `${server.address}:${server.tcpPort}` };
      // A server restarting or out of reach is normal: said once (INFO) per outage, each retry at DEBUG.
      if (!isExpectedDisconnect(err)) this.limited.warn(`socket:${code}`, fields, 'data connection error');
      else {
        log[this.outageSaid ? 'debug' : 'info'](disconnectFields(err), 'data connection failed; retrying');
        this.outageSaid = true;
      }
    });
    socket.once('close', () => this.closedSocket(socket, log));
    socket.once('secureConnect', () => {
      const id = peerIdOf(socket);
      if (id !== pinned) {
        log.error({ presented: id, pinned }, 'server key does not match the pinned id; disconnecting');
        socket.destroy();
        return;
      }
      socket.setNoDelay(true);
      const pieces = socket.alpnProtocol === ALPN_PIECES;
      socket.write(encodeFrame({
        type: 'hello', version: PROTOCOL_VERSION, name: this.options.name,
        ...(pieces ? { caps: this.capabilities() } : {}),
      }));
      let greeted = false;
      const reader = new FrameReader(async (frame: Frame) => {
        lastHeard = this.clock();
        if (!greeted) {
          if (frame.type !== 'hello') throw new GroupcastError(ErrorCode.PROTOCOL, `expected HELLO, got ${frame.type}`);
          greeted = true;
          this.attempt = 0;
          this.outageSaid = false;
          const heldPieces = pieces && ((frame.caps?.flags ?? 0) & Capability.HELD_PIECES) !== 0;
          this.session = this.options.receiver.openSession({ send: (reply) => this.write(socket, reply) }, pinned, { pieces, heldPieces });
          log.info({ serverName: frame.name }, 'connected');
          this.emit('connected', pinned, frame.name);
          return;
        }
        switch (frame.type) {
          case 'ping':
            this.write(socket, { type: 'pong', time: frame.time });
            return;
          case 'pong':
            this.session?.pong(frame.time);
            return;
          case 'hello':
            throw new GroupcastError(ErrorCode.PROTOCOL, 'second HELLO');
          default:
            busy = true;
            try {
              await this.session?.handle(frame);
            } finally {
              busy = false;
              lastHeard = this.clock();
            }
        }
      });
      reader.on('error', (err) => {
        log.warn({ err }, 'closing the data connection: bad frame or protocol violation');
        socket.destroy();
      });
      socket.pipe(reader);
    });
  }

  /** Pieces and trees always; peers, and pulling trees, when this member has a peer port (not --no-peers). */
  private capabilities(): { flags: number; peerPort: number } {
    const peerPort = this.options.receiver.options.peers?.port ?? 0;
    return { flags: Capability.PIECES | Capability.TREES | (peerPort > 0 ? Capability.PEERS | Capability.TREE_SWARM : 0), peerPort };
  }

  /**
   * Replies (ACCEPT, RESULT, PONG) are a few dozen bytes per transfer or heartbeat, so they are
   * written without waiting for 'drain': what can queue is bounded by what the server sends us.
   */
  private write(socket: TLSSocket, frame: Frame): void {
    if (!socket.destroyed) socket.write(encodeFrame(frame));
  }

  private closedSocket(socket: TLSSocket, log: Logger): void {
    if (this.socket !== socket) return;
    clearInterval(this.heartbeat);
    this.socket = undefined;
    const session = this.session;
    this.session = undefined;
    if (session) {
      void session.close();
      log.info('disconnected');
      this.emit('disconnected');
    }
    if (this.closed) return;
    const delay = backoffDelay(this.attempt++, RECONNECT_BASE_MS, RECONNECT_CAP_MS);
    log.debug({ retryMs: delay }, 'reconnecting later');
    this.retryTimer = setTimeout(() => this.dial(), delay);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    const session = this.session;
    if (socket) {
      const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.destroy();
      await gone;
    }
    await session?.close();
  }
}
