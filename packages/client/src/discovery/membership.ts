import { EventEmitter } from 'node:events';
import {
  backoffDelay, msFromEnvironment, NAK_REASON_NAMES, NakReason, NO_PROOF, RateLimitedLog,
  type ControlEndpoint, type ControlMessage, type Logger, type Peer,
} from '@groupcast/shared';
import type { Discovery, ServerInfo } from './discovery.js';
import type { Invitation } from './invitation.js';

type Ack = Extract<ControlMessage, { type: 'ack' }>;
type Nak = Extract<ControlMessage, { type: 'nak' }>;

type Status = 'waiting' | 'joining' | 'joined' | 'refused';

/** Why the server refused a group, as the member saw it. */
export interface Refusal {
  reason: NakReason;
  message: string;
  /** When this refusal was first heard (ms since the epoch); a repeat of it keeps the time. */
  at: number;
  /** NOT_AUTHORIZED for a group this daemon had joined: the operator revoked it. */
  revoked: boolean;
}

interface GroupState {
  status: Status;
  attempt: number;
  timer: NodeJS.Timeout | undefined;
  /** Nonces of the JOINs sent since the last answer: a NAK counts only if it answers one of them. */
  nonces: Set<string>;
  /** Was the group ACKed since this daemon started? A later NOT_AUTHORIZED is then a revoke. */
  everJoined: boolean;
  /** The last refusal; kept while the group is asked again, so that a repeat is not logged twice. */
  refusal: Refusal | undefined;
}

export interface MembershipEvents {
  joined: [group: string];
  refused: [group: string, refusal: Refusal];
  /** Every configured group is refused: this daemon has nothing left to serve. */
  stranded: [refusals: Array<{ group: string; refusal: Refusal }>];
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
/**
 * Every group joined, or refused for a reason the operator can lift (not authorized: `members allow`;
 * group full: a guest place freed), is asked again this often: a revoke that leaves the member in
 * another group (the link stays up) shows within this time, and so does a re-allow. One JOIN per group
 * per period per member: at 1000 members in two groups, 7 JOINs a second. GC_MEMBERSHIP_RECHECK_MS
 * overrides it, for tests.
 */
export const MEMBERSHIP_RECHECK_MS = msFromEnvironment(process.env.GC_MEMBERSHIP_RECHECK_MS, 5 * 60_000);
/** Refusals for good: nothing the member can do changes them, only the operator (and then a restart). */
const FINAL_REASONS: ReadonlySet<NakReason> = new Set([NakReason.UNKNOWN_GROUP, NakReason.NOT_AUTHORIZED, NakReason.BAD_CODE, NakReason.GROUP_FULL]);
/** Of those, the ones the operator can lift while this daemon runs, worth asking about again. */
const LIFTABLE_REASONS: ReadonlySet<NakReason> = new Set([NakReason.NOT_AUTHORIZED, NakReason.GROUP_FULL]);

/**
 * Joins the configured groups once the pinned server is known (or, with a join code and no pin yet,
 * once a server matching the code is heard): JOIN, retried with backoff until the
 * server ACKs or refuses. Every handler is idempotent — UDP duplicates and reorders, and a server
 * that restarts (new ANNOUNCE instance) is simply asked again.
 *
 * A revoke is not said on the data plane (the server closes the link of a member left in no group and
 * refuses its next TLS handshake, which looks like network trouble; a member left in another group
 * keeps its link), so groups are asked again when the link drops and every MEMBERSHIP_RECHECK_MS:
 * the server's NAK NOT_AUTHORIZED is how a member learns it was revoked. A refusal is logged once
 * (a repeat of the same answer only at debug); when every group is refused, 'stranded' is emitted.
 */
export class Membership extends EventEmitter<MembershipEvents> {
  private readonly groups = new Map<string, GroupState>();
  private closed = false;
  private recheckTimer: NodeJS.Timeout | undefined;
  private readonly onServer = (): void => this.joinWaiting();
  private readonly onRestart = (): void => this.rejoinAll();
  private readonly onAck = (ack: Ack, server: ServerInfo): void => this.acked(ack, server);
  private readonly onNak = (nak: Nak, server: ServerInfo, trusted: boolean): void => this.refused(nak, server, trusted);
  private readonly limited: RateLimitedLog;

  constructor(private readonly options: MembershipOptions) {
    super();
    this.limited = new RateLimitedLog(options.log);
    for (const group of options.groups) {
      this.groups.set(group, { status: 'waiting', attempt: 0, timer: undefined, nonces: new Set(), everJoined: false, refusal: undefined });
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
    this.recheckTimer = setInterval(() => this.recheck(), MEMBERSHIP_RECHECK_MS);
    this.recheckTimer.unref();
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

  /**
   * Asks again for the groups we are in (and those the operator may have given back): when the data
   * connection dropped (a revoke looks just like that from here) and periodically. Network trouble
   * only costs JOIN retries; a group still being asked is left to its retries.
   */
  recheck(): void {
    for (const [group, state] of this.groups) {
      if (state.status === 'joined' || (state.status === 'refused' && this.liftable(state))) this.join(group, state);
    }
  }

  private liftable(state: GroupState): boolean {
    return state.refusal !== undefined && LIFTABLE_REASONS.has(state.refusal.reason);
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
    const fields = { group: ack.group, server: server.id };
    // A recheck that finds us still in is routine; the first join, or one after a refusal, is news.
    if (state.everJoined && !state.refusal) this.options.log.debug(fields, 'still joined');
    else this.options.log.info(fields, 'joined');
    state.status = 'joined';
    state.everJoined = true;
    state.refusal = undefined;
    state.nonces.clear();
    this.emit('joined', ack.group);
  }

  /**
   * A refusal for good from a trusted server (the pinned one, or the proven issuer of a used or expired
   * join code) ends the group's joins (and, for the last group, the daemon: 'stranded'). One from a server
   * that only matches the join code's id prefix (a code it never issued: "wrong join code") is shown and
   * logged the same, but the JOIN keeps being asked: a rogue server that matches the prefix must not make
   * this member give up for good.
   */
  private refused(nak: Nak, server: ServerInfo, trusted: boolean): void {
    const state = this.groups.get(nak.group);
    if (nak.op !== 'join' || !state || !state.nonces.has(nak.request.toString('hex'))) {
      this.options.log.debug({ group: nak.group }, 'ignoring a NAK that answers no pending join');
      return;
    }
    const fields = { group: nak.group, server: server.id, reason: NAK_REASON_NAMES[nak.reason], message: nak.message };
    if (!FINAL_REASONS.has(nak.reason)) {
      // Rate limited, or the server failed to record the join: the retry timer is already running
      // with a growing delay; let it ask again.
      this.limited.warn(`${nak.group}:${nak.reason}`, fields, 'join not answered yet; will retry');
      return;
    }
    if (trusted) {
      clearTimeout(state.timer);
      state.nonces.clear();
      state.status = 'refused';
    }
    const previous = state.refusal;
    const repeat = previous?.reason === nak.reason && previous.message === nak.message;
    const revoked = nak.reason === NakReason.NOT_AUTHORIZED && state.everJoined;
    if (repeat) {
      this.options.log.debug(fields, 'join still refused');
    } else {
      const refusal: Refusal = { reason: nak.reason, message: nak.message, at: Date.now(), revoked };
      state.refusal = refusal;
      // `unproven`: said by a server that is not trusted, so the JOIN is still asked.
      this.options.log.error({ ...fields, revoked, ...(trusted ? {} : { unproven: true }) }, 'join refused');
      this.emit('refused', nak.group, refusal);
    }
    if (trusted) this.strandedCheck();
  }

  /** Nothing left to serve when every configured group is refused for good. */
  private strandedCheck(): void {
    const refusals: Array<{ group: string; refusal: Refusal }> = [];
    for (const [group, state] of this.groups) {
      if (state.status !== 'refused' || !state.refusal) return;
      refusals.push({ group, refusal: state.refusal });
    }
    if (refusals.length > 0) this.emit('stranded', refusals);
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
    clearInterval(this.recheckTimer);
    for (const state of this.groups.values()) clearTimeout(state.timer);
  }
}
