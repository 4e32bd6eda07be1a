import { EventEmitter } from 'node:events';
import type { RemoteInfo } from 'node:dgram';
import {
  backoffDelay, RateLimitedLog,
  type ControlEndpoint, type ControlMessage, type Datagram, type Logger, type Peer, type PeerId,
} from '@groupcast/shared';
import type { Invitation } from './invitation.js';
import { ListRequests } from './list-requests.js';
import type { ServerPin } from './pinning.js';

/** What the member knows about its (pinned) server. */
export interface ServerInfo {
  id: PeerId;
  /** From ANNOUNCE; replies do not carry it. */
  name: string | undefined;
  address: string;
  /** The server's control-plane UDP port (where its datagrams come from). */
  controlPort: number;
  tcpPort: number;
  /** From ANNOUNCE: changes when the server restarts. */
  instance: Buffer | undefined;
}

type Ack = Extract<ControlMessage, { type: 'ack' }>;
type Nak = Extract<ControlMessage, { type: 'nak' }>;

export interface DiscoveryEvents {
  /** The server became known, or its address or TCP port changed. */
  server: [server: ServerInfo];
  /** The server announced a new instance id: it restarted and may have forgotten us. */
  restart: [server: ServerInfo];
  ack: [ack: Ack, server: ServerInfo];
  /**
   * `trusted`: from the pinned server, or with the proof that its sender issued the join code (a used or
   * expired code). Otherwise from a server that only matches the code's id prefix (cheap to match): anyone
   * on the LAN could have said it.
   */
  nak: [nak: Nak, server: ServerInfo, trusted: boolean];
  /** Nothing is pinned, and a server whose id matches the join code spoke: join, so that it can prove itself. */
  candidate: [server: PeerId];
}

export interface DiscoveryOptions {
  log: Logger;
  endpoint: ControlEndpoint;
  pin: ServerPin;
  /** --server: LIST goes there too. */
  unicast: Peer | undefined;
  /** --code: how a candidate server proves, in its ACK, that it issued the code. */
  invitation?: Invitation | undefined;
}

/** What a datagram from a server says about it, on top of what was known. */
function serverInfo(id: PeerId, message: ControlMessage, from: RemoteInfo, previous: ServerInfo | undefined): ServerInfo {
  const announce = message.type === 'announce' ? message : undefined;
  return {
    id,
    name: announce?.name ?? previous?.name,
    address: from.address,
    controlPort: from.port,
    tcpPort: 'tcpPort' in message ? message.tcpPort : (previous?.tcpPort ?? 0),
    instance: announce?.instance ?? previous?.instance,
  };
}

const LIST_BASE_MS = 250;
const LIST_CAP_MS = 10_000;

/**
 * Finds the pinned server: asks with LIST (retried until answered), listens for ANNOUNCE, and learns
 * the address from whatever the server sends. Datagrams from any other server are dropped here, so
 * the components behind it only ever see the pinned one.
 */
export class Discovery extends EventEmitter<DiscoveryEvents> {
  private known: ServerInfo | undefined;
  private listTimer: NodeJS.Timeout | undefined;
  private listAttempt = 0;
  private closed = false;
  private readonly limited: RateLimitedLog;
  private readonly lists: ListRequests;
  private readonly onMessage = (datagram: Datagram, from: RemoteInfo): void => this.receive(datagram, from);

  constructor(private readonly options: DiscoveryOptions) {
    super();
    this.limited = new RateLimitedLog(options.log);
    this.lists = new ListRequests(options.endpoint);
  }

  get server(): ServerInfo | undefined {
    return this.known;
  }

  start(): void {
    this.options.endpoint.on('message', this.onMessage);
    this.sendList();
  }

  private sendList(): void {
    if (this.closed || this.known) return;
    const { unicast } = this.options;
    this.lists.send();
    if (unicast) this.lists.send(unicast);
    this.listTimer = setTimeout(() => this.sendList(), backoffDelay(this.listAttempt++, LIST_BASE_MS, LIST_CAP_MS));
  }

  private receive(datagram: Datagram, from: RemoteInfo): void {
    const { message, sender } = datagram;
    // LIST, JOIN and LEAVE are other members talking to the server.
    if (message.type === 'list' || message.type === 'join' || message.type === 'leave') return;
    const verdict = this.options.pin.consider(sender, message.type === 'announce' ? message.name : undefined);
    const fields = { server: sender, from: `${from.address}:${from.port}`, type: message.type };
    if (verdict === 'unpinned') {
      this.limited.warn(
        `unpinned:${sender}`,
        fields,
        `server ${sender} found but not pinned; restart with --server-id ${sender} or --trust-first-server`,
      );
      return;
    }
    if (verdict === 'other') {
      this.limited.warn(`other:${sender}`, { ...fields, pinned: this.options.pin.pinned }, 'ignoring a server that is not the pinned one');
      return;
    }
    if (verdict === 'candidate' && !this.vouched(datagram, from, fields)) return;
    // The pinned server asks the LIST's source to prove itself; its GROUPS then teach us its address.
    if (message.type === 'cookie') {
      this.lists.answer(message, from);
      return;
    }
    const server = this.learn(sender, message, from);
    if (message.type === 'ack') this.emit('ack', message, server);
    else if (message.type === 'nak') this.emit('nak', message, server, true);
  }

  /**
   * A candidate is pinned only by an ACK carrying the proof that it issued the join code. Anything
   * else from it is not trusted; its announcements only prompt the JOIN that asks for that proof,
   * and its NAK is passed on so the member can say why it was refused — trusted only with the proof
   * that it issued the code (a used, expired or cancelled one), so a server that merely matches the prefix cannot
   * make the member give up for good.
   */
  private vouched(datagram: Datagram, from: RemoteInfo, fields: object): boolean {
    const { message, sender, publicKey } = datagram;
    if (message.type === 'ack' && this.options.invitation?.verifyAck(message, publicKey)) {
      this.options.pin.confirm(sender);
      return true;
    }
    if (message.type === 'nak') {
      // Membership logs the refusal once, with its reason; this only says where it came from.
      this.options.log.debug({ ...fields, reason: message.message }, 'a server matching the join code refused it');
      const proven = this.options.invitation?.verifyNak(message, publicKey) ?? false;
      this.emit('nak', message, serverInfo(sender, message, from, undefined), proven);
      return false;
    }
    if (message.type === 'ack') {
      this.limited.warn(`unproven:${sender}`, fields, 'ignoring an ACK without proof that this server issued the join code');
      return false;
    }
    this.limited.warn(`candidate:${sender}`, fields, 'found a server matching the join code; joining to verify it');
    this.emit('candidate', sender);
    return false;
  }

  private learn(id: PeerId, message: ControlMessage, from: RemoteInfo): ServerInfo {
    const previous = this.known;
    const announce = message.type === 'announce' ? message : undefined;
    const server = serverInfo(id, message, from, previous);
    const { tcpPort } = server;
    this.known = server;
    clearTimeout(this.listTimer);
    const moved = !previous || previous.address !== server.address || previous.tcpPort !== server.tcpPort;
    const restarted = announce && previous?.instance && !previous.instance.equals(announce.instance);
    if (!previous) {
      this.options.log.info({ server: id, serverName: server.name, address: server.address, tcpPort }, 'server found');
    } else if (moved) {
      this.options.log.info({ server: id, address: server.address, tcpPort }, 'server address changed');
    }
    if (moved) this.emit('server', server);
    if (restarted) {
      this.options.log.info({ server: id }, 'server restarted');
      this.emit('restart', server);
    }
    return server;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.listTimer);
    this.options.endpoint.off('message', this.onMessage);
  }
}
