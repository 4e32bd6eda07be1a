import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { MULTICAST_TTL, NONCE_LENGTH } from '../constants.js';
import { GroupcastError } from '../errors.js';
import type { Signer } from '../identity.js';
import { decodeDatagram, encodeDatagram, type ControlMessage, type Datagram } from '../wire/control.js';
import { ReplayGuard } from '../wire/replay.js';
import { RateLimitedLog, type Logger } from './logger.js';
import type { MulticastInterface } from './network.js';

export interface ControlEndpointOptions {
  log: Logger;
  signer: Signer;
  groupAddress: string;
  port: number;
  iface: MulticastInterface;
  /**
   * Both roles have a listener bound to the group address on the group port, joined to the group: it
   * hears only multicast. Beside it:
   * 'server': a socket bound to the interface's own address on the group port, which sends everything
   * and hears unicast requests (--server), and only on that interface, never on 0.0.0.0.
   * 'client': an ephemeral socket for requests, so that several members on one host each get their
   * own replies (unbound, so a --server across a router is reached by whatever route the host has).
   */
  role: 'server' | 'client';
  clock?: () => number;
}

/** Room for about four thousand small datagrams (each costs ~1 KiB of buffer in the kernel). */
const SERVER_RECV_BUFFER = 4 * 1024 * 1024;

export interface Peer {
  address: string;
  port: number;
}

export interface ControlEndpointEvents {
  message: [datagram: Datagram, from: RemoteInfo];
}

/**
 * The control plane's sockets. Every datagram is decoded, verified and checked for freshness before
 * anyone sees it; anything else is dropped, counted by reason and logged at a rate limit. Input never
 * throws out of here: only a failed bind does, from open().
 */
export class ControlEndpoint extends EventEmitter<ControlEndpointEvents> {
  readonly counters = { received: 0, sent: 0, dropped: {} as Record<string, number> };
  private readonly replay = new ReplayGuard();
  private readonly warn: RateLimitedLog;
  private readonly clock: () => number;
  private sockets: Socket[] = [];
  private sender: Socket | undefined;
  private closed = false;

  constructor(private readonly options: ControlEndpointOptions) {
    super();
    this.clock = options.clock ?? Date.now;
    this.warn = new RateLimitedLog(options.log);
  }

  async open(): Promise<void> {
    const { port, role, groupAddress, iface } = this.options;
    await this.bind(port, groupAddress, true);
    this.sender = role === 'server' ? await this.bind(port, iface.address, false) : await this.bind(0, undefined, false);
  }

  get localPort(): number {
    return this.sender?.address().port ?? 0;
  }

  private async bind(port: number, address: string | undefined, joinGroup: boolean): Promise<Socket> {
    const { iface, groupAddress } = this.options;
    const socket = createSocket({
      type: iface.family === 'IPv4' ? 'udp4' : 'udp6',
      reuseAddr: true,
      // Every member's requests land in the server's one socket: a thousand JOINs at once must queue,
      // not overflow the default ~200 KiB and wait for a retry. The kernel caps it at net.core.rmem_max.
      ...(this.options.role === 'server' ? { recvBufferSize: SERVER_RECV_BUFFER } : {}),
    });
    this.sockets.push(socket);
    socket.on('message', (buf, from) => this.receive(buf, from));
    // Listeners bind to the group address itself, so they hear only multicast: unicast requests to
    // this host's control port (the --server fallback) then always reach the server's unicast socket,
    // never a member's listener that happened to bind the shared port after it.
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, address, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.on('error', (err) => this.options.log.warn({ err }, 'control socket error'));
    socket.setMulticastInterface(iface.socketInterface);
    socket.setMulticastTTL(MULTICAST_TTL);
    socket.setMulticastLoopback(true);
    if (joinGroup) socket.addMembership(groupAddress, iface.socketInterface);
    return socket;
  }

  private drop(reason: string, from: RemoteInfo, err?: unknown): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    this.warn.warn(reason, { from: `${from.address}:${from.port}`, reason, err }, 'dropped datagram');
  }

  private receive(buf: Buffer, from: RemoteInfo): void {
    this.counters.received++;
    let datagram: Datagram;
    try {
      datagram = decodeDatagram(buf);
      if (datagram.sender === this.options.signer.id) return;
      this.replay.admit(datagram, this.clock());
    } catch (err) {
      this.drop(err instanceof GroupcastError ? err.code : 'internal', from, err);
      return;
    }
    try {
      this.emit('message', datagram, from);
    } catch (err) {
      this.options.log.error({ err, type: datagram.message.type }, 'control handler failed');
    }
  }

  /** Signs and sends; to the multicast group unless a peer is named. Returns the request nonce. */
  send(message: ControlMessage, to?: Peer): Buffer {
    const nonce = randomBytes(NONCE_LENGTH);
    const sender = this.sender;
    if (this.closed || !sender) return nonce;
    const buf = encodeDatagram(message, this.options.signer, { timestamp: this.clock(), nonce });
    const target = to ?? { address: this.options.groupAddress, port: this.options.port };
    sender.send(buf, target.port, target.address, (err) => {
      if (err) this.warn.warn(`send:${err.message}`, { err, to: target }, 'datagram send failed');
      else this.counters.sent++;
    });
    return nonce;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const socket of this.sockets) socket.close();
    this.sockets = [];
  }
}
