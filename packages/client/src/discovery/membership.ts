import { EventEmitter } from 'node:events';
import {
  backoffDelay, NAK_REASON_NAMES, NakReason,
  type ControlEndpoint, type ControlMessage, type Logger, type Peer,
} from '@groupcast/shared';
import type { Discovery, ServerInfo } from './discovery.js';
import type { Invitation } from './invitation.js';

type Ack = Extract<ControlMessage, { type: 'ack' }>;
type Nak = Extract<ControlMessage, { type: 'nak' }>;

type Status = 'waiting' | 'joining' | 'joined' | 'refused';

interface GroupState {
  status: Status;
  attempt: number;
  timer: NodeJS.Timeout | undefined;
  /** Nonces of the JOINs sent since the last answer: a NAK counts only if it answers one of them. */
  nonces: Set<string>;
}

export interface MembershipEvents {
  joined: [group: string];
  refused: [group: string, reason: NakReason, message: string];
}

export interface MembershipOptions {
  log: Logger;
  endpoint: ControlEndpoint;
  discovery: Discovery;
  groups: string[];
  /** --code: every JOIN carries its proof. */
  invitation: Invitation | undefined;
  /** --server: JOINs go there too. */
  unicast: Peer | undefined;
}

const JOIN_BASE_MS = 250;
const JOIN_CAP_MS = 10_000;
/** Enough to match a late answer to any recent retry, without growing while the server is away. */
const MAX_NONCES = 32;
const NO_PROOF = Buffer.alloc(0);

/**
 * Joins the configured groups once the pinned server is known (or, with a join code and no pin yet,
 * once a server matching the code is heard): JOIN, retried with backoff until the
 * server ACKs or refuses. Every handler is idempotent — UDP duplicates and reorders, and a server
 * that restarts (new ANNOUNCE instance) is simply asked again.
 */
export class Membership extends EventEmitter<MembershipEvents> {
  private readonly groups = new Map<string, GroupState>();
  private closed = false;
  private readonly onServer = (): void => this.joinWaiting();
  private readonly onRestart = (): void => this.rejoinAll();
  private readonly onAck = (ack: Ack, server: ServerInfo): void => this.acked(ack, server);
  private readonly onNak = (nak: Nak, server: ServerInfo): void => this.refused(nak, server);

  constructor(private readonly options: MembershipOptions) {
    super();
    for (const group of options.groups) {
      this.groups.set(group, { status: 'waiting', attempt: 0, timer: undefined, nonces: new Set() });
    }
  }

  start(): void {
    const { discovery } = this.options;
    discovery.on('server', this.onServer);
    discovery.on('candidate', this.onServer);
    discovery.on('restart', this.onRestart);
    discovery.on('ack', this.onAck);
    discovery.on('nak', this.onNak);
    if (discovery.server) this.joinWaiting();
  }

  /** A group this member means to be in: configured, and not refused by the server. */
  wants(group: string): boolean {
    const state = this.groups.get(group);
    return state !== undefined && state.status !== 'refused';
  }

  private joinWaiting(): void {
    for (const [group, state] of this.groups) if (state.status === 'waiting') this.join(group, state);
  }

  /** After a server restart, ask again for everything — a refusal may have been lifted too. */
  private rejoinAll(): void {
    for (const [group, state] of this.groups) this.join(group, state);
  }

  private join(group: string, state: GroupState): void {
    clearTimeout(state.timer);
    state.status = 'joining';
    state.attempt = 0;
    state.nonces.clear();
    this.sendJoin(group, state);
  }

  private sendJoin(group: string, state: GroupState): void {
    if (this.closed || state.status !== 'joining') return;
    const { endpoint, unicast, invitation } = this.options;
    const message: ControlMessage = { type: 'join', group, proof: invitation?.joinProof(group) ?? NO_PROOF };
    this.remember(state, endpoint.send(message));
    if (unicast) this.remember(state, endpoint.send(message, unicast));
    const delay = backoffDelay(state.attempt++, JOIN_BASE_MS, JOIN_CAP_MS);
    this.options.log.debug({ group, attempt: state.attempt, retryMs: delay }, 'join sent');
    state.timer = setTimeout(() => this.sendJoin(group, state), delay);
  }

  private remember(state: GroupState, nonce: Buffer): void {
    if (state.nonces.size >= MAX_NONCES) {
      const oldest = state.nonces.values().next().value;
      if (oldest !== undefined) state.nonces.delete(oldest);
    }
    state.nonces.add(nonce.toString('hex'));
  }

  /** Any ACK for the group from the pinned server means we are in, whichever retry it answers. */
  private acked(ack: Ack, server: ServerInfo): void {
    const state = this.groups.get(ack.group);
    if (ack.op !== 'join' || !state || state.status === 'joined') return;
    clearTimeout(state.timer);
    state.status = 'joined';
    state.nonces.clear();
    this.options.log.info({ group: ack.group, server: server.id }, 'joined');
    this.emit('joined', ack.group);
  }

  private refused(nak: Nak, server: ServerInfo): void {
    const state = this.groups.get(nak.group);
    if (nak.op !== 'join' || !state || !state.nonces.has(nak.request.toString('hex'))) {
      this.options.log.debug({ group: nak.group }, 'ignoring a NAK that answers no pending join');
      return;
    }
    const fields = { group: nak.group, server: server.id, reason: NAK_REASON_NAMES[nak.reason], message: nak.message };
    if (nak.reason === NakReason.RATE_LIMITED) {
      // The retry timer is already running with a growing delay; let it ask again.
      this.options.log.warn(fields, 'join rate limited; will retry');
      return;
    }
    clearTimeout(state.timer);
    state.status = 'refused';
    state.nonces.clear();
    this.options.log.error(fields, 'join refused');
    this.emit('refused', nak.group, nak.reason, nak.message);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const { discovery } = this.options;
    discovery.off('server', this.onServer);
    discovery.off('candidate', this.onServer);
    discovery.off('restart', this.onRestart);
    discovery.off('ack', this.onAck);
    discovery.off('nak', this.onNak);
    for (const state of this.groups.values()) clearTimeout(state.timer);
  }
}
