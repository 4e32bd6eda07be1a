import type { RemoteInfo } from 'node:dgram';
import {
  datagramLength, MAX_DATAGRAM, NAK_REASON_NAMES, NakReason, NO_PROOF, RateLimitedLog,
  type ControlEndpoint, type ControlMessage, type Datagram, type GroupInfo, type Logger, type MembershipOp, type Peer,
} from '@groupcast/shared';
import { AttemptLimiter } from './attempt-limiter.js';
import type { Invites } from './invites.js';
import { ListCookies } from './list-cookie.js';
import type { Membership, Verdict } from './membership.js';

/**
 * LISTs per source address: a burst of 64, then 20 a second, counted apart for LISTs without a valid
 * cookie (answered with a COOKIE no larger than the LIST) and with one (answered with the groups, to an
 * address proven real). Enough for a host full of members and `groups` commands retrying at once.
 * Kept apart so that forged LISTs in a member's name can use up only its cookie-less allowance, never
 * the proven one; a member also learns the server from ANNOUNCE, which needs no LIST at all.
 */
export const LIST_PER_SOURCE = { burst: 64, refillMs: 50 };
/**
 * JOINs and LEAVEs per source address from ids the server does not know (no record, not allowed
 * anywhere): a burst of 256, then 20 a second. Known members are never limited, so forging a member's
 * address cannot lock it out. 256 covers a test host or NAT with hundreds of new members joining at
 * once; a flood of fresh keys from one address gets 20 a second, the rest no answer at all (a real
 * member retries, as for a lost packet), and an open group's cap bounds what gets in regardless.
 */
export const JOIN_PER_SOURCE = { burst: 256, refillMs: 50 };

/** Splits the group list into GROUPS pages that each fit one datagram. */
export function groupPages(request: Buffer, tcpPort: number, groups: GroupInfo[]): ControlMessage[] {
  const pages: GroupInfo[][] = [[]];
  for (const group of groups) {
    const page = pages[pages.length - 1] ?? [];
    page.push(group);
    const probe: ControlMessage = { type: 'groups', request, page: 0, pages: 1, tcpPort, groups: page };
    if (page.length > 1 && (page.length > 255 || datagramLength(probe) > MAX_DATAGRAM)) {
      page.pop();
      pages.push([group]);
    }
  }
  return pages.map((page, index) => ({ type: 'groups', request, page: index, pages: pages.length, tcpPort, groups: page }));
}


/**
 * Answers members on the control plane: LIST with the groups, JOIN and LEAVE with ACK or NAK, each
 * unicast back to the sender. Handlers are idempotent, since members retry until answered.
 *
 * A source address is not proven by a signature (anyone can sign with a fresh key), so nothing sent to
 * an unproven one may be larger than what came from it: a LIST without a valid cookie is answered with
 * a COOKIE of the LIST's own size, and only a LIST that echoes it gets the GROUPS pages. Requests are
 * rate-limited per source address; past the rate they are dropped and counted.
 */
export class ControlPlane {
  /** `limited`: requests dropped over the per-source rate. `cookies`: LISTs answered with a COOKIE. */
  readonly counters = { lists: 0, cookies: 0, joins: 0, leaves: 0, naks: 0, limited: 0 };
  private readonly cookies: ListCookies;
  private readonly limiters = {
    cookie: new AttemptLimiter(LIST_PER_SOURCE),
    list: new AttemptLimiter(LIST_PER_SOURCE),
    join: new AttemptLimiter(JOIN_PER_SOURCE),
  };
  private readonly refusals: RateLimitedLog;

  constructor(
    private readonly options: {
      log: Logger;
      endpoint: ControlEndpoint;
      membership: Membership;
      tcpPort: () => number;
      /** Checks a JOIN's join-code proof, before authorization. */
      invites: Invites;
      clock?: () => number;
    },
  ) {
    this.cookies = new ListCookies(this.now);
    this.refusals = new RateLimitedLog(options.log);
  }

  private readonly now = (): number => (this.options.clock ?? Date.now)();

  start(): void {
    this.options.endpoint.on('message', (datagram, from) => this.handle(datagram, from));
  }

  /** Takes a token from the source's bucket; false (counted) means drop the request unanswered. */
  private withinRate(kind: keyof ControlPlane['limiters'], address: string): boolean {
    if (this.limiters[kind].take(address, this.now())) return true;
    this.counters.limited++;
    this.refusals.warn(`limited:${kind}`, { address, limited: this.counters.limited }, `${kind} requests over the rate; dropping`);
    return false;
  }

  private handle(datagram: Datagram, from: RemoteInfo): void {
    const { message, sender } = datagram;
    const peer = { address: from.address, port: from.port };
    if (message.type !== 'list' && message.type !== 'join' && message.type !== 'leave') return;
    const { membership } = this.options;
    if (message.type !== 'list' && !membership.isKnown(sender) && !this.withinRate('join', peer.address)) return;
    membership.seen(sender);
    switch (message.type) {
      case 'list':
        this.list(datagram, message.cookie, peer);
        return;
      case 'join':
        this.counters.joins++;
        this.join(datagram, message, peer).catch((err: unknown) => {
          this.options.log.error({ err, member: sender, group: message.group }, 'cannot record a join');
          this.answer(datagram, 'join', message.group, { ok: false, reason: NakReason.OTHER, message: 'server error' }, peer);
        });
        return;
      case 'leave':
        this.counters.leaves++;
        this.answer(datagram, 'leave', message.group, this.options.membership.leave(sender, message.group, peer), peer);
        return;
    }
  }

  /** The groups for a proven source; for any other, the cookie that proves it next time. */
  private list(datagram: Datagram, cookie: Buffer, peer: Peer): void {
    if (!this.cookies.valid(cookie, peer)) {
      if (!this.withinRate('cookie', peer.address)) return;
      this.counters.cookies++;
      this.options.endpoint.send({ type: 'cookie', request: datagram.nonce, cookie: this.cookies.issue(peer) }, peer);
      return;
    }
    if (!this.withinRate('list', peer.address)) return;
    this.counters.lists++;
    for (const page of groupPages(datagram.nonce, this.options.tcpPort(), this.options.membership.groupInfo())) {
      this.options.endpoint.send(page, peer);
    }
  }

  /** A join-code proof is checked first (it may enroll the id); then the usual authorization. */
  private async join(datagram: Datagram, message: Extract<ControlMessage, { type: 'join' }>, peer: Peer): Promise<void> {
    const { membership, invites } = this.options;
    const { group } = message;
    let answerProof: Buffer = NO_PROOF;
    if (message.proof.length > 0 && membership.hasGroup(group)) {
      const checked = await invites.check(datagram, message, peer.address);
      if (!checked.ok) {
        this.answer(datagram, 'join', group, checked, peer, checked.proof);
        return;
      }
      answerProof = checked.proof;
    }
    this.answer(datagram, 'join', group, membership.join(datagram.sender, group, peer), peer, answerProof);
  }

  private answer(datagram: Datagram, op: MembershipOp, group: string, verdict: Verdict, peer: Peer, proof = NO_PROOF): void {
    const request = datagram.nonce;
    if (verdict.ok) {
      this.options.endpoint.send({ type: 'ack', request, op, group, tcpPort: this.options.tcpPort(), proof }, peer);
      return;
    }
    this.counters.naks++;
    // One line per kind of refusal a minute, with the count held back: refusals come from the network.
    this.refusals.warn(
      `refused:${op}:${verdict.reason}`,
      { member: datagram.sender, group, op, reason: NAK_REASON_NAMES[verdict.reason], address: peer.address, refused: this.counters.naks },
      `${op} refused`,
    );
    this.options.endpoint.send({ type: 'nak', request, op, group, reason: verdict.reason, message: verdict.message, proof }, peer);
  }
}
